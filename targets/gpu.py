"""The GPU side of check.py: stdlib only.

A bundle planned for a GPU (manifest plan.device "gpu") proves that it ran there: the measuring
child refuses a runner on the CPU (missing_message says why and how the device gets a GPU
build), and measures the VRAM the model holds once its timed runs are over (the KV cache and
compute buffers are allocated by then):
- the process's own entry in `nvidia-smi --query-compute-apps` where the driver lists it;
- otherwise (a container, whose process ids the driver does not see) how much the device
  memory in use rose from before the model was loaded, which counts any other process's
  allocations of that time too and says so.
"""

from __future__ import annotations

import subprocess

import manifestkeys as K

MIB = 1024 * 1024
SMI_TIMEOUT_S = 10
# how each runtime gets its GPU build on the device
GPU_BUILDS = {
    "llama.cpp": 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-binary '
    "llama-cpp-python llama-cpp-python (needs the CUDA toolkit)",
    "onnxruntime": "pip uninstall -y onnxruntime && pip install onnxruntime-gpu",
}


def _smi(*query: str) -> str | None:
    try:
        proc = subprocess.run(
            ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def process_memory(text: str, pid: int) -> int | None:
    """This process's VRAM in bytes from `--query-compute-apps=pid,used_memory` rows (MiB)."""
    total = None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            total = (total or 0) + int(parts[1]) * MIB
    return total


def used_memory(text: str) -> int | None:
    """Device memory in use, in bytes, summed over the GPUs of `--query-gpu=memory.used` rows."""
    values = [line.strip() for line in text.splitlines() if line.strip()]
    if not values or not all(v.isdigit() for v in values):
        return None
    return sum(int(v) for v in values) * MIB


def memory_used() -> int | None:
    text = _smi("--query-gpu=memory.used")
    return used_memory(text) if text is not None else None


def vram_in_use(pid: int, before: int | None) -> tuple[int | None, str]:
    """(bytes, how they were measured) for the VRAM this process holds."""
    text = _smi("--query-compute-apps=pid,used_memory")
    own = process_memory(text, pid) if text is not None else None
    if own is not None:
        return own, "nvidia-smi, this process"
    now = memory_used()
    if now is not None and before is not None:
        return now - before, "nvidia-smi, device memory in use since before the load"
    return None, "not measured: nvidia-smi is not available"


def missing_message(manifest: dict, runner) -> str:
    target = manifest[K.TARGET]
    accelerator = (target.get("accelerator") or {}).get("name") or "its GPU"
    runtime = manifest[K.RUNTIME]["name"]
    why = getattr(runner, "device_note", "") or "the runner did not place it on a GPU"
    build = GPU_BUILDS.get(runtime, "a GPU build of the runtime")
    return (
        f"this bundle is planned for {target['name']}'s {accelerator} and {runtime} runs it on "
        f"the CPU here: {why}; install the GPU build ({build}), or pass --allow-cpu for a "
        "smoke test on the CPU (its figures are not the GPU's)"
    )
