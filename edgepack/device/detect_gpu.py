"""The NVIDIA GPU of this machine, for `edgepack targets --detect`: found through NVML (where
pynvml is installed) or nvidia-smi; its bandwidth and tensor throughput from data sheets (they
cannot be measured cheaply)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from dataclasses import dataclass

MiB = 2**20
NVIDIA_SMI_TIMEOUT_S = 10

# Known NVIDIA GPUs by name (upper case): data-sheet memory bandwidth (GB/s) and dense tensor
# throughput (fp16 TFLOPS, int8 TOPS; the sheets' headline figures double these with sparsity).
# The first match wins, so variants come before the plain name.
KNOWN_GPUS = (
    (r"H200.*NVL", 4800, 835, 1670, "H200 NVL data sheet"),
    (r"H200", 4800, 989, 1979, "H200 SXM data sheet"),
    (r"H100.*PCIE", 2000, 756, 1513, "H100 PCIe data sheet"),
    (r"H100.*NVL", 3900, 835, 1670, "H100 NVL data sheet"),
    (r"H100", 3350, 989, 1979, "H100 SXM data sheet"),
    (r"A100.*(80GB.*PCIE|PCIE.*80GB)", 1935, 312, 624, "A100 80GB PCIe data sheet"),
    (r"A100.*80GB", 2039, 312, 624, "A100 80GB SXM data sheet"),
    (r"A100", 1555, 312, 624, "A100 40GB data sheet"),
    (r"\bA10\b", 600, 125, 250, "A10 data sheet"),
    (r"\bL4\b", 300, 121, 242, "L4 data sheet"),
    (r"\bT4\b", 320, 65, 130, "T4 data sheet"),
)
# An NVIDIA GPU not in the table: figures at the low end of CUDA GPUs with tensor cores
# (a GTX 1650 reads 128 GB/s, an RTX 3060 360 GB/s) so the plan is never optimistic.
UNKNOWN_GPU = (200, 20, 40)


@dataclass(frozen=True)
class Gpu:
    name: str
    vram_bytes: int
    source: str  # NVML | nvidia-smi
    count: int  # NVIDIA GPUs found; the profile describes the first


def parse_nvidia_smi(text: str) -> list[tuple[str, int]]:
    """`nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` -> (name, bytes)."""
    gpus = []
    for line in text.splitlines():
        name, sep, mib = line.rpartition(",")
        if sep and mib.strip().isdigit() and name.strip():
            gpus.append((name.strip(), int(mib.strip()) * MiB))
    return gpus


def gpu_figures(name: str) -> tuple[float, float, float, bool, str]:
    """(GB/s, fp16 TFLOPS, int8 TOPS, int8 tensor cores known, source) for a GPU name."""
    upper = name.upper()
    for pattern, bandwidth, fp16, int8, source in KNOWN_GPUS:
        if re.search(pattern, upper):
            return bandwidth, fp16, int8, True, source
    return (*UNKNOWN_GPU, False, "not in edgepack's table of known GPUs: a conservative value")


def _nvml() -> tuple[Gpu | None, str]:
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError of every kind: no driver, no library
        return None, f"NVML did not start ({exc})"
    try:
        if not (count := pynvml.nvmlDeviceGetCount()):
            return None, "NVML found no GPU"
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        return Gpu(name, total, "NVML", count), "found through NVML"
    except Exception as exc:  # noqa: BLE001
        return None, f"NVML failed ({exc})"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def detect_gpu() -> tuple[Gpu | None, str]:
    """The first NVIDIA GPU through NVML (where pynvml is installed), else nvidia-smi."""
    gpu, nvml = _nvml()
    if gpu is not None:
        return gpu, nvml
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, f"no NVIDIA GPU: {nvml}, and nvidia-smi is not installed"
    try:
        query = [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
        result = subprocess.run(query, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"no NVIDIA GPU: {nvml}, and nvidia-smi did not answer ({type(exc).__name__})"
    gpus = parse_nvidia_smi(result.stdout) if result.returncode == 0 else []
    if not gpus:
        return None, f"no NVIDIA GPU: {nvml}, and nvidia-smi listed none (exit {result.returncode})"
    name, total = gpus[0]
    return Gpu(name, total, "nvidia-smi", len(gpus)), "found through nvidia-smi"
