"""Decode and prefill time of llama.cpp on a device: a model fitted to published measurements.

The database (edgepack/data/speed_measurements.json) holds llama-bench results that other people
published, each with its device's hardware and its source. tools/speed_fit.py fits the
coefficients below to it (edgepack.plan.speed_fit) and stores them with their
leave-one-device-out errors in edgepack/data/speed_fit.json; this module only evaluates them.

A token's time is a sum of terms, each a feature of the work and the device times a fitted,
non-negative coefficient (seconds per unit):

    CPU decode    bytes / bandwidth       ops / (threads x thread rate)          1
    CPU prefill   ops / (threads x rate)  1 / prompt tokens
    GPU decode    bytes / bandwidth       layers                                 1
    GPU prefill   ops / peak ops          bytes / (bandwidth x prompt tokens)    layers / tokens

bytes: the weights (and KV cache) read per token; ops: 2 x the multiply-adds of the parameters a
token computes with; thread rate: the clock times the int8 (or float) ops per cycle of the
slowest core a thread runs on. ggml splits a matrix evenly between its threads, so a thread on a
little core holds every other back: threads fill the fastest cluster first, and the slowest core
used sets the pace (a QCS6490's A55s make eight threads no faster than four big cores). The ops
per cycle are those of the kernels llama.cpp's CPU backend runs: AMX counts as AVX-512 VNNI
(llama.cpp uses AMX only for a few types, in builds made for it). Bandwidth is the data-sheet
peak: the coefficient carries the share a runtime reaches.

Pure: no I/O here (speed_fit reads the files), no backend imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..device.hardware import ISA_OPS_PER_CYCLE

GB = 1e9
PHASES = ("decode", "prefill")
KINDS = ("cpu", "gpu")
FEATURES = {
    ("cpu", "decode"): ("bytes/bandwidth", "ops/thread compute", "fixed"),
    ("cpu", "prefill"): ("ops/thread compute", "fixed/tokens"),
    ("gpu", "decode"): ("bytes/bandwidth", "layers", "fixed"),
    ("gpu", "prefill"): ("ops/peak", "bytes/bandwidth/tokens", "layers/tokens"),
}


@dataclass(frozen=True)
class Work:
    """What one token costs a model: bytes read, ops, layers, and the weights' bits."""

    bytes_per_token: float
    ops_per_token: float
    layers: int
    bits: int


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
    threads: int = 1
    clusters: tuple[Cluster, ...] = ()  # fastest first
    gpu_tflops: float = 0.0  # FP16 tensor (dense) peak of the GPU


def ops_per_cycle(isa, bits: int) -> int:
    """Ops per cycle per core of the widest ISA feature llama.cpp's kernels use (int8 path for
    <= 8-bit weights)."""
    path = 1 if bits <= 8 else 0
    isa = {"avx512_vnni" if f == "amx" else f for f in isa}
    return max((ISA_OPS_PER_CYCLE[f][path] for f in isa if f in ISA_OPS_PER_CYCLE), default=8)


def thread_rate(machine: Machine, bits: int) -> float:
    """Ops/s of one thread at the pace of the slowest core the threads occupy."""
    slowest, left = None, machine.threads
    for cluster in machine.clusters:
        rate = cluster.clock_ghz * 1e9 * ops_per_cycle(cluster.isa, bits)
        slowest = rate if slowest is None else min(slowest, rate)
        left -= cluster.cores
        if left <= 0:
            break
    return slowest or 1.0


def features(kind: str, phase: str, work: Work, machine: Machine, tokens: int = 1) -> tuple:
    """The terms of one token's time, before their coefficients (see the module docstring)."""
    read = work.bytes_per_token / (machine.bandwidth_gbs * GB)
    if kind == "cpu":
        compute = work.ops_per_token / (machine.threads * thread_rate(machine, work.bits))
        if phase == "decode":
            return (read, compute, 1.0)
        return (compute, 1.0 / tokens)
    peak = max(machine.gpu_tflops, 1e-9) * 1e12
    if phase == "decode":
        return (read, float(work.layers), 1.0)
    return (work.ops_per_token / peak, read / tokens, work.layers / tokens)


def seconds_per_token(
    coefficients: dict, phase: str, work: Work, machine: Machine, tokens: int = 1
) -> float:
    """Predicted seconds per token: decode at one token a step, prefill over `tokens` tokens."""
    coef = coefficients[f"{machine.kind}/{phase}"]
    terms = features(machine.kind, phase, work, machine, tokens)
    return sum(c * x for c, x in zip(coef, terms, strict=True))
