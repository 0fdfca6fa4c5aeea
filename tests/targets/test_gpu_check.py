"""A bundle planned for a GPU proves it ran there: check.py's GPU side.

Unit: the nvidia-smi tables (as the driver prints them; no GPU on the test hosts), the VRAM
row of the verdict, and the message where the runtime has no GPU. Integration: the default
model built for t4 on this CPU-only host, whose bundle's check is an ERROR naming the GPU
build, and passes with --allow-cpu (as the build's own check runs it), saying so.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgepack.bundle.kit import check_module, gpu_module
from tests.conftest import run_cli

gpu = gpu_module()
check = check_module()
MIB = 1024 * 1024


def test_the_process_row_of_the_compute_apps_table():
    table = "4242, 1536\n977, 80\n4242, 12\n"
    assert gpu.process_memory(table, 4242) == 1548 * MIB  # two contexts of one process
    assert gpu.process_memory(table, 5) is None
    assert gpu.process_memory("[N/A]\n", 4242) is None


def test_device_memory_in_use_over_every_gpu():
    assert gpu.used_memory("1024\n2048\n") == 3072 * MIB
    assert gpu.used_memory("") is None
    assert gpu.used_memory("[N/A]\n") is None


def measured(device, vram=None, planned="gpu"):
    return {
        "device": device,
        "planned_device": planned,
        "vram_bytes": vram,
        "vram_source": "nvidia-smi, this process",
        "peak_rss_bytes": 1e9,
        "first_token_ms_p50": 20.0,
        "decode_tokens_per_s_p50": 100.0,
        "golden": [],
    }


BUDGET = {
    "memory_gb": 16,
    "disk_gb": 50,
    "first_token_ms": 500,
    "decode_tokens_per_s": 20,
    "min_quality": 0.5,
    "accelerator_memory_gb": 14,
}


def test_the_vram_row_is_judged_on_the_gpu_only():
    rows = {c["name"]: c for c in check.judge({}, BUDGET, measured("gpu", 2e9), 1)}
    assert rows["vram"]["pass"] and rows["vram"]["budget"] == 14e9
    rows = {c["name"]: c for c in check.judge({}, BUDGET, measured("gpu", 15e9), 1)}
    assert not rows["vram"]["pass"]
    rows = {c["name"]: c for c in check.judge({}, BUDGET, measured("gpu", None), 1)}
    assert not rows["vram"]["pass"]  # on the GPU, an unmeasured VRAM proves nothing
    rows = {c["name"]: c for c in check.judge({}, BUDGET, measured("cpu"), 1)}
    assert "vram" not in rows


def test_a_cpu_standing_in_for_the_gpu_reports_its_speed_without_judging_it():
    slow = measured("cpu") | {"first_token_ms_p50": 900.0, "decode_tokens_per_s_p50": 5.0}
    rows = {c["name"]: c for c in check.judge({}, BUDGET, slow, 1)}
    for name in ("first_token_ms", "decode_tokens_per_s"):
        assert rows[name]["judged"] is False and not rows[name]["pass"]
        assert "stands in for the GPU" in rows[name]["unit"]
    assert rows["memory"].get("judged", True)  # memory and quality carry over: judged
    on_cpu = measured("cpu", planned="cpu") | {"first_token_ms_p50": 900.0}
    rows = {c["name"]: c for c in check.judge({}, BUDGET, on_cpu, 1)}
    assert rows["first_token_ms"].get("judged", True) and not rows["first_token_ms"]["pass"]


def test_the_missing_gpu_message_names_the_gpu_and_its_build():
    class CpuRunner:
        device_note = "llama-cpp-python 0.3.36 here has no GPU backend"

    manifest = {
        "target": {"name": "t4", "accelerator": {"name": "NVIDIA Tesla T4"}},
        "runtime": {"name": "llama.cpp"},
    }
    text = gpu.missing_message(manifest, CpuRunner())
    assert "NVIDIA Tesla T4" in text and "no GPU backend" in text
    assert "-DGGML_CUDA=on" in text and "--allow-cpu" in text
    assert "\n" not in text


@pytest.mark.integration
def test_a_t4_bundle_on_a_cpu_host_is_an_error_unless_allowed(tmp_path):
    out = tmp_path / "bundles"
    r = run_cli(
        "build", "--target", "t4", "--format", "gguf", "--precision", "q8_0",
        "--candidates", "1", "--eval-tokens", "256", "--out", str(out), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    bundle = next(p for p in out.iterdir() if p.is_dir())
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["plan"]["device"] == "gpu"
    assert manifest["runtime"]["settings"] == {"gpu_layers": -1}
    assert "## On the GPU" in (bundle / "README.md").read_text()
    host_check = manifest["build_host"]["check"]  # this host's CPU, with --allow-cpu
    assert host_check["pass"] and host_check["measured"]["device"] == "cpu", host_check

    def run(*args):
        cmd = [sys.executable, str(bundle / "check.py"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    refused = run("--repetitions", "1")
    assert refused.returncode == 2, refused.stdout
    assert "runs it on the CPU here" in refused.stdout and "-DGGML_CUDA=on" in refused.stdout
    allowed = run("--repetitions", "1", "--allow-cpu")
    assert allowed.returncode == 0, allowed.stdout
    assert "measured on this host's CPU (--allow-cpu)" in allowed.stdout
    tarball = bundle.parent / f"{bundle.name}.tar.gz"
    verified = run_cli("verify", str(tarball), "--repetitions", "1")
    assert verified.returncode == 2 and "-DGGML_CUDA=on" in verified.stdout + verified.stderr
    verified = run_cli("verify", str(tarball), "--repetitions", "1", "--allow-cpu")
    assert verified.returncode == 0, verified.stdout[-2000:]
