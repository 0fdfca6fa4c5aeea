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
    cpu_clock,
    cpu_model,
    isa_features,
    normalize_arch,
    parse_cpuinfo,
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

SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
cpu MHz\t\t: 2000.000
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts \
acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon \
pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 \
monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe \
popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb \
cat_l3 cat_l2 cdp_l3 invpcid_single intel_ppin cdp_l2 ssbd mba ibrs ibpb stibp ibrs_enhanced \
fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx smap \
avx512ifma clflushopt clwb intel_pt avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 \
xsaves cqm_llc split_lock_detect avx_vnni avx512_bf16 wbnoinvd dtherm ida arat pln pts hwp hfi \
avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg \
tme avx512_vpopcntdq la57 rdpid bus_lock_detect cldemote movdiri movdir64b enqcmd fsrm md_clear \
serialize tsxldtrk pconfig arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d \
arch_capabilities
bogomips\t: 4000.00

"""

ALDER_LAKE_LAPTOP = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: 12th Gen Intel(R) Core(TM) i7-1260P
cpu MHz\t\t: 400.000
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx \
fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 pcid \
sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch fsgsbase \
bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb intel_pt sha_ni xsaveopt xsavec \
xgetbv1 xsaves split_lock_detect avx_vnni dtherm ida arat pln pts hwp hwp_notify hwp_act_window \
hwp_epp hwp_pkg_req hfi umip pku ospke waitpkg gfni vaes vpclmulqdq rdpid movdiri movdir64b fsrm \
md_clear serialize arch_lbr ibt flush_l1d arch_capabilities

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: 12th Gen Intel(R) Core(TM) i7-1260P
cpu MHz\t\t: 2100.000
"""

PI5_CORE = """\
processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc \
dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
PI5_BOARD = """\
Revision\t: d04170
Serial\t\t: 4e6a1c3b5f0d2a17
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
RASPBERRY_PI_5 = "\n".join(PI5_CORE.format(n=n) for n in range(4)) + "\n" + PI5_BOARD

GRAVITON3 = """\
processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt \
fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg \
dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""

CPUS = [
    (
        "sapphire-rapids",
        "x86_64",
        SAPPHIRE_RAPIDS,
        "Intel(R) Xeon(R) Platinum 8480+",
        ("sse4_2", "avx2", "avx512", "avx512_vnni", "avx_vnni", "amx"),
    ),
    (
        "alder-lake-laptop",
        "x86_64",
        ALDER_LAKE_LAPTOP,
        "12th Gen Intel(R) Core(TM) i7-1260P",
        ("sse4_2", "avx2", "avx_vnni"),
    ),
    (
        "raspberry-pi-5",
        "arm64",
        RASPBERRY_PI_5,
        "4x Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)",
        ("neon", "dotprod"),
    ),
    ("graviton3", "arm64", GRAVITON3, "1x Neoverse-V1", ("neon", "dotprod", "i8mm", "sve")),
]


@pytest.mark.parametrize("label,arch,text,model,isa", CPUS, ids=[c[0] for c in CPUS])
def test_cpuinfo_model_and_isa(label, arch, text, model, isa):
    processors, extra = parse_cpuinfo(text)
    assert cpu_model(arch, processors, extra) == model
    flags = processors[0]["flags" if arch == "x86_64" else "Features"]
    assert isa_features(arch, flags) == isa
    parse_profile(_raw(arch, isa), source="x")  # the names are the schema's


def test_cpuinfo_counts_processors_and_keeps_machine_keys():
    processors, extra = parse_cpuinfo(RASPBERRY_PI_5)
    assert [p["processor"] for p in processors] == ["0", "1", "2", "3"]
    assert extra["Model"] == "Raspberry Pi 5 Model B Rev 1.0"
    big_little = PI5_CORE.format(n=0) + "\n" + PI5_CORE.format(n=1).replace("0xd0b", "0xd05")
    assert cpu_model("arm64", *parse_cpuinfo(big_little)) == "1x Cortex-A76 + 1x Cortex-A55"
    unknown = PI5_CORE.format(n=0).replace("0x41", "0x99")
    assert "implementer 0x99, part 0xd0b" in cpu_model("arm64", *parse_cpuinfo(unknown))


CLOCKS = [
    ("model name", "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", {}, "2500.0", 1.9, "model name"),
    ("base_frequency", "12th Gen", {"base_frequency": "2100000\n"}, "400.0", 2.1, "base clock"),
    ("max_freq", "4x Cortex-A76", {"cpuinfo_max_freq": "2400000\n"}, "", 2.4, "highest"),
    ("cpu MHz", "AMD EPYC", {"cpuinfo_max_freq": ""}, "2445.406", 2.445406, "cpu MHz"),
    ("nothing", "arm64 CPU", {}, "", 2.0, "conservative guess"),
]


@pytest.mark.parametrize("label,model,sysfs,mhz,ghz,why", CLOCKS, ids=[c[0] for c in CLOCKS])
def test_clock_sources(label, model, sysfs, mhz, ghz, why):
    processors = [{"processor": "0", "cpu MHz": mhz}] if mhz else [{"processor": "0"}]
    clock, source = cpu_clock(model, processors, sysfs)
    assert clock == pytest.approx(ghz)
    assert why in source


def test_arch_names():
    assert normalize_arch("x86_64") == "x86_64"
    assert normalize_arch("AMD64") == "x86_64"
    assert normalize_arch("aarch64") == "arm64"
    with pytest.raises(ProfileError, match="riscv64"):
        normalize_arch("riscv64")


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


def _raw(arch, isa):
    """A minimal valid profile dict for checking that ISA names pass the schema."""
    return {
        "name": "x",
        "description": "x",
        "objective": "quality",
        "hardware": {
            "arch": arch,
            "cpu": "x",
            "cores": 1,
            "clock_ghz": 1.0,
            "ram_gb": 1.0,
            "memory_bandwidth_gbs": 1.0,
            "isa": list(isa),
        },
        "accelerator": {"kind": "none"},
        "budget": {
            "memory_gb": 0.5,
            "disk_gb": 1,
            "context_tokens": 1,
            "first_token_ms": 1,
            "decode_tokens_per_s": 1,
            "min_quality": 0.5,
        },
        "runtimes": {"prefer": ["llama.cpp"]},
    }


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
