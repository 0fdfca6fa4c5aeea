"""Peak compute of a device from its profile's hardware: the ops per cycle of its ISA features
and a GPU's tensor throughput, and the ISA class that decides which kernels a runtime runs.
Pure: no I/O."""

from __future__ import annotations

# Peak ops per cycle per core of each ISA feature: (float path, int8 path).
ISA_OPS_PER_CYCLE = {
    "amx": (1024, 2048),
    "avx512_vnni": (64, 256),
    "avx512": (64, 128),
    "avx_vnni": (32, 128),
    "avx2": (32, 64),
    "sse4_2": (16, 32),
    "i8mm": (16, 128),
    "sve": (16, 64),
    "dotprod": (16, 64),
    "fp16": (16, 32),  # half-precision NEON arithmetic: kernels choose by dotprod, not by it
    "neon": (16, 32),
}


def cpu_peak_ops(cores: int, clock_ghz: float, isa, bits: int) -> float:
    """Peak ops/s of a CPU: cores x clock x the best ISA feature's ops per cycle (int8 path
    for weights of 8 bits or fewer)."""
    path = 1 if bits <= 8 else 0
    per_cycle = max(ISA_OPS_PER_CYCLE[f][path] for f in isa) if isa else 8
    return cores * clock_ghz * 1e9 * per_cycle


def gpu_peak_ops(gpu, bits: int) -> float:
    return (gpu.int8_tops if bits <= 8 and gpu.int8 else gpu.fp16_tflops) * 1e12


def isa_class(arch: str, isa) -> tuple[str, str]:
    """What decides which kernels a runtime runs: the arch and its widest ISA feature."""
    best = max(isa, key=lambda f: ISA_OPS_PER_CYCLE[f], default="none")
    return (arch, best)
