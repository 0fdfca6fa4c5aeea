"""Decode and prefill time of llama.cpp on a device: a model fitted to published measurements.

The database (edgepack/data/speed_measurements.json) holds llama-bench results that other people
published, each with its device's hardware and its source. tools/speed_fit.py fits the
coefficients below to it (edgepack.plan.speed_fit) and stores them with their
leave-one-device-out errors in edgepack/data/speed_fit.json; this module only evaluates them.

A token's time is a sum of terms, each a feature of the work and the device times a fitted,
non-negative coefficient (seconds per unit):

    CPU decode    bytes / bandwidth       ops / (threads x thread rate), per arch    1
    CPU prefill   ops / (threads x rate), per arch                 1 / prompt tokens
    GPU decode    bytes / bandwidth       layers                                 1
    GPU prefill   ops / peak ops, per type family   bytes / (bandwidth x tokens)  layers / tokens

bytes: the weights (and KV cache) read per token; ops: 2 x the multiply-adds of the parameters a
token computes with; thread rate: the clock times the int8 (or float) ops per cycle of the
slowest core a thread runs on. ggml splits a matrix evenly between its threads, so a thread on a
little core holds every other back: threads fill the fastest cluster first, and the slowest core
used sets the pace (a QCS6490's A55s make eight threads no faster than four big cores). On arm64
the ops per cycle follow the ISA (NEON, dot product; i8mm only for the types llama.cpp repacks
for it, Q4_0 and IQ4_NL: its K-quants multiply with dot products); on
x86 they are AVX2's whatever else the CPU has: with the peak of AVX-512 VNNI or AMX, prefill on
Zen 4 and Sapphire Rapids servers came out 2 to 6 times optimistic, so llama.cpp's kernels reach
no more of them (tools/speed_fit.py). The compute terms of the two architectures have a
coefficient each. Bandwidth is the data-sheet peak: the coefficient carries the share a
runtime reaches. A GPU's peak ops are its dense FP16 tensor-core figure; llama.cpp's prompt
kernels for K-quants reach a smaller share of it than those for legacy quantizations and float
weights.

Pure: no I/O here (speed_fit reads the files), no backend imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..device.hardware import ISA_OPS_PER_CYCLE

GB = 1e9
PHASES = ("decode", "prefill")
KINDS = ("cpu", "gpu")
FEATURES = {
    ("cpu", "decode"): ("bytes/bandwidth", "x86 ops/thread compute", "arm ops/thread compute",
                        "fixed"),
    ("cpu", "prefill"): ("x86 ops/thread compute", "arm ops/thread compute", "fixed/tokens"),
    ("gpu", "decode"): ("bytes/bandwidth", "layers", "fixed"),
    ("gpu", "prefill"): ("legacy-quant and float ops/peak", "k-quant ops/peak",
                         "bytes/bandwidth/tokens", "layers/tokens"),
}


@dataclass(frozen=True)
class Work:
    """What one token costs a model: bytes read, ops, layers, and the weights' bits."""

    bytes_per_token: float
    ops_per_token: float
    layers: int
    bits: int
    quant: str = ""  # llama.cpp's type family: q4_0, q4_k, q6_k, q8_0, f16, ...


@dataclass(frozen=True)
class Cluster:
    cores: int
    clock_ghz: float
    isa: tuple[str, ...]


@dataclass(frozen=True)
class Machine:
    """A device as the speed model sees it."""

    kind: str  # "cpu" or "gpu" (where the weights are computed with)
    bandwidth_gbs: float  # the data-sheet peak of the memory holding the weights
    arch: str = "x86_64"  # of the CPU: x86_64 or arm64
    threads: int = 1
    clusters: tuple[Cluster, ...] = ()  # fastest first
    gpu_tflops: float = 0.0  # FP16 tensor (dense) peak of the GPU


X86_KERNELS = ("avx2", "sse4_2")  # what llama.cpp's x86 kernels reach (the module docstring)


I8MM_TYPES = ("q4_0", "iq4_nl")  # the types llama.cpp repacks for i8mm matrix multiplies


def ops_per_cycle(isa, bits: int, arch: str = "arm64", quant: str = "") -> int:
    """Ops per cycle per core of the widest ISA feature llama.cpp's kernels use (int8 path for
    <= 8-bit weights)."""
    path = 1 if bits <= 8 else 0
    if arch == "x86_64":
        isa = [f for f in X86_KERNELS if f in isa][:1]
    elif quant and quant not in I8MM_TYPES:
        isa = [f for f in isa if f != "i8mm"]
    return max((ISA_OPS_PER_CYCLE[f][path] for f in isa if f in ISA_OPS_PER_CYCLE), default=8)


def thread_rate(machine: Machine, bits: int, quant: str = "") -> float:
    """Ops/s of one thread at the pace of the slowest core the threads occupy."""
    slowest, left = None, machine.threads
    for cluster in machine.clusters:
        rate = cluster.clock_ghz * 1e9 * ops_per_cycle(cluster.isa, bits, machine.arch, quant)
        slowest = rate if slowest is None else min(slowest, rate)
        left -= cluster.cores
        if left <= 0:
            break
    return slowest or 1.0


def features(kind: str, phase: str, work: Work, machine: Machine, tokens: int = 1) -> tuple:
    """The terms of one token's time, before their coefficients (see the module docstring)."""
    read = work.bytes_per_token / (machine.bandwidth_gbs * GB)
    if kind == "cpu":
        rate = thread_rate(machine, work.bits, work.quant)
        compute = work.ops_per_token / (machine.threads * rate)
        x86, arm = (compute, 0.0) if machine.arch == "x86_64" else (0.0, compute)
        if phase == "decode":
            return (read, x86, arm, 1.0)
        return (x86, arm, 1.0 / tokens)
    peak = max(machine.gpu_tflops, 1e-9) * 1e12
    if phase == "decode":
        return (read, float(work.layers), 1.0)
    compute = [0.0, 0.0]
    compute[type_family(work.quant)] = work.ops_per_token / peak
    return (*compute, read / tokens, work.layers / tokens)


def type_family(quant: str) -> int:
    """1: K-quants and i-quants, 0: the rest (legacy quantizations such as Q4_0 and Q8_0, and
    float weights). On a GPU their prompt kernels reach different shares of the tensor cores'
    peak (the published rows give too few float ones to fit those apart)."""
    return 1 if (quant.endswith("_k") or quant.startswith("iq")) else 0


def seconds_per_token(
    coefficients: dict, phase: str, work: Work, machine: Machine, tokens: int = 1
) -> float:
    """Predicted seconds per token: decode at one token a step, prefill over `tokens` tokens."""
    coef = coefficients[f"{machine.kind}/{phase}"]
    terms = features(machine.kind, phase, work, machine, tokens)
    return sum(c * x for c, x in zip(coef, terms, strict=True))


def batched_seconds(
    coefficients: dict, work: Work, machine: Machine, streams: int, kv_bytes: float
) -> float:
    """One decode step of `streams` sequences at once (a serving runtime's batch): the weights
    read once and each stream's KV cache, and every stream's multiply-adds. On a CPU the fitted
    decode terms add them; on a GPU a step is bound by the larger of its decode time and the
    batch's multiply-adds at the share of the tensor cores' peak its prompt kernels reach."""
    batch = Work(
        work.bytes_per_token + (streams - 1) * kv_bytes,
        work.ops_per_token * streams,
        work.layers,
        work.bits,
        work.quant,
    )
    step = seconds_per_token(coefficients, "decode", batch, machine)
    if machine.kind == "gpu":
        terms = features("gpu", "prefill", batch, machine)[:2]
        compute = sum(c * x for c, x in zip(coefficients["gpu/prefill"][:2], terms, strict=True))
        step = max(step, compute)
    return step

