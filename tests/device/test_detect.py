"""`edgepack targets --detect`: the parsers on other machines' /proc/cpuinfo and nvidia-smi
output, the profile built from a machine's facts, and the command on this machine."""

import json
import os
import re
import subprocess
import sys

import pytest

from edgepack.device.cpuinfo import (
    Cpu,
)
from edgepack.device.detect import (
    Bandwidth,
    Gpu,
    Machine,
    build_profile,
    gpu_figures,
    parse_nvidia_smi,
    write_profile,
)
from edgepack.device.profiles import load_profile, parse_profile
from edgepack.errors import ProfileError
from tests.conftest import ROOT, config_dir, run_cli


def test_nvidia_smi_lines():
    text = "NVIDIA H200, 143771\nTesla T4, 15360\n"
    assert parse_nvidia_smi(text) == [("NVIDIA H200", 143771 * 2**20), ("Tesla T4", 15360 * 2**20)]
    failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    assert parse_nvidia_smi(failed) == []
    assert parse_nvidia_smi("") == []


GPUS = [
    ("Tesla T4", 320, 65, True),
    ("NVIDIA A10", 600, 125, True),
    ("NVIDIA A10G", 200, 20, False),  # not the A10: unknown, so conservative
    ("NVIDIA L4", 300, 121, True),
    ("NVIDIA A100-PCIE-40GB", 1555, 312, True),
    ("NVIDIA A100 80GB PCIe", 1935, 312, True),
    ("NVIDIA A100-SXM4-80GB", 2039, 312, True),
    ("NVIDIA H100 PCIe", 2000, 756, True),
    ("NVIDIA H100 80GB HBM3", 3350, 989, True),
    ("NVIDIA H200", 4800, 989, True),
    ("NVIDIA GeForce RTX 4090", 200, 20, False),
]


@pytest.mark.parametrize("name,bandwidth,fp16,known", GPUS, ids=[g[0] for g in GPUS])
def test_gpu_figures(name, bandwidth, fp16, known):
    got = gpu_figures(name)
    assert got[:2] == (bandwidth, fp16) and got[3] == known
    assert ("data sheet" in got[4]) == known


def _machine(arch="x86_64", model="Intel(R) Xeon(R) Platinum 8480+", gpu=None, limit=None):
    cpu = Cpu(arch, model, 2.0, "base clock stated in the CPU's model name", ("avx2",))
    if arch == "arm64":
        cpu = Cpu(arch, model, 2.4, "highest clock from sysfs cpufreq", ("neon", "dotprod"))
    bandwidth = Bandwidth(31.9, 16.5, 2, 256 * 2**20, 5, 0.4)
    note = "found through nvidia-smi" if gpu else "no NVIDIA GPU: nvidia-smi is not installed"
    return Machine(cpu, 16, "sched_getaffinity", 64 * 10**9, limit, bandwidth, gpu, note,
                   500 * 10**9, "/data")  # fmt: skip


def _numbers_are_justified(text):
    for line in text.splitlines():
        if re.match(r"^\w+\s*=\s*[-\d.\[]", line):
            assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, line


def test_profile_of_an_intel_server():
    profile, text = build_profile(_machine(), name="server-1")
    assert profile == parse_profile(text.encode(), source="x")
    assert profile.name == "server-1" and "Platinum 8480+" in profile.description
    assert (profile.hardware.cores, profile.hardware.memory_bandwidth_gbs) == (16, 31.9)
    assert profile.budget.memory_gb == 48.0  # 75 % of 64 GB
    assert profile.budget.disk_gb == 100  # half of 500 GB free, capped
    assert profile.runtimes.prefer[0] == "openvino"
    assert profile.gpu is None
    _numbers_are_justified(text)


def test_profile_of_an_arm_board_in_a_container():
    machine = _machine("arm64", "4x Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)", limit=8 * 10**9)
    profile, text = build_profile(machine)
    assert profile.name == "detected" and profile.hardware.arch == "arm64"
    assert profile.budget.memory_gb == 6.0  # 75 % of the cgroup limit, not of the RAM
    assert "cgroup" in text
    assert profile.runtimes.prefer[0] == "llama.cpp"
    _numbers_are_justified(text)


@pytest.mark.parametrize("name,known", [("NVIDIA H200", True), ("NVIDIA GeForce RTX 3060", False)])
def test_profile_with_a_gpu(name, known):
    gpu = Gpu(name, 143771 * 2**20, "nvidia-smi", 2)
    profile, text = build_profile(_machine(gpu=gpu))
    assert profile.gpu.name == name
    assert profile.gpu.vram_gb == pytest.approx(150.8)
    assert profile.budget.accelerator_memory_gb == pytest.approx(135.7)  # 90 % of the VRAM
    assert profile.gpu.int8 is known
    assert "the first of 2 GPUs" in text
    assert ("conservative" in text) is not known
    assert profile.runtimes.prefer[0] == "llama.cpp"
    _numbers_are_justified(text)


def test_a_bad_name_is_refused():
    with pytest.raises(ProfileError, match="name"):
        build_profile(_machine(), name="My Box")


def test_write_is_atomic_and_refuses_an_existing_file(tmp_path):
    path = tmp_path / "sub" / "box.toml"
    write_profile(path, "a = 1\n")
    assert path.read_text() == "a = 1\n"
    with pytest.raises(ProfileError, match="already exists; pass --force"):
        write_profile(path, "a = 2\n")
    assert path.read_text() == "a = 1\n"
    write_profile(path, "a = 3\n", force=True)
    assert path.read_text() == "a = 3\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["box.toml"]  # no temp file left
    with pytest.raises(ProfileError, match="is a directory"):
        write_profile(tmp_path, "a = 4\n")


# ---- the command on this machine ---------------------------------------------------------


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    path = tmp_path_factory.mktemp("detect") / "x.toml"
    result = run_cli("targets", "--detect", "--out", str(path))
    return path, result


def test_detect_writes_a_profile_of_this_machine(detected):
    path, result = detected
    assert result.returncode == 0, result.stderr
    profile = load_profile(str(path))
    assert profile.name == "detected"
    assert profile.hardware.cores == len(os.sched_getaffinity(0))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    assert profile.hardware.ram_gb == pytest.approx(ram, rel=0.01)
    assert profile.hardware.memory_bandwidth_gbs > 0
    assert profile.budget.memory_gb <= profile.hardware.ram_gb
    assert "memory bandwidth" in result.stderr  # progress goes to stderr
    assert str(path) in result.stdout
    _numbers_are_justified(path.read_text())


def test_plan_for_the_detected_machine(detected):
    path, _ = detected
    result = run_cli("plan", "--model", str(config_dir("smollm2-135m")), "--target", str(path))
    assert result.returncode in (0, 2), result.stderr
    assert "detected" in result.stdout + result.stderr


def test_detect_refuses_an_existing_file(detected):
    path, _ = detected
    before = path.read_bytes()
    result = run_cli("targets", "--detect", "--out", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--force" in lines[0]
    assert path.read_bytes() == before


def test_detect_json(tmp_path):
    path = tmp_path / "box.toml"
    result = run_cli("targets", "--detect", "--json", "--name", "box", "--out", str(path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # one JSON document, nothing else
    assert parse_profile(data["profile"], source="stdout") == load_profile(str(path))
    assert data["profile"]["name"] == "box" and data["file"] == str(path)
    assert data["measured"]["bandwidth"]["all_threads_gbs"] > 0
    assert data["measured"]["cores"] == len(os.sched_getaffinity(0))


def test_out_without_detect_is_a_usage_error(tmp_path):
    result = run_cli("targets", "--out", str(tmp_path / "x.toml"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--detect" in lines[0]
    assert not (tmp_path / "x.toml").exists()


def test_detect_imports_no_backend(tmp_path):
    code = (
        "import sys; from edgepack.cli.main import main\n"
        f"try: main(['targets', '--detect', '--out', {str(tmp_path / 'x.toml')!r}])\n"
        "except SystemExit: pass\n"
        "heavy = ('torch', 'transformers', 'openvino', 'onnxruntime', 'llama_cpp')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


SMI = "#!/bin/sh\n{body}\n"
SMI_CASES = [
    ("h200", 'echo "NVIDIA H200, 143771"', "NVIDIA H200", "found through nvidia-smi"),
    ("no-driver", 'echo "NVIDIA-SMI has failed because it could not communicate"; exit 9', None,
     "nvidia-smi listed none (exit 9)"),
    ("hangs", "exec sleep 5", None, "nvidia-smi did not answer (TimeoutExpired)"),
]  # fmt: skip


@pytest.mark.parametrize("label,body,name,note", SMI_CASES, ids=[c[0] for c in SMI_CASES])
def test_gpu_through_nvidia_smi(tmp_path, monkeypatch, label, body, name, note):
    """A stand-in nvidia-smi on PATH: the edge no machine here reaches (an NVIDIA driver)."""
    from edgepack.device import detect_gpu as detect

    smi = tmp_path / "nvidia-smi"
    smi.write_text(SMI.format(body=body))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as where pynvml is not installed
    monkeypatch.setattr(detect, "NVIDIA_SMI_TIMEOUT_S", 0.5)
    gpu, found = detect.detect_gpu()
    assert (gpu.name if gpu else None) == name
    assert note in found and ("pynvml is not installed" in found) == (gpu is None)
    if gpu:
        assert (gpu.vram_bytes, gpu.source, gpu.count) == (143771 * 2**20, "nvidia-smi", 1)
