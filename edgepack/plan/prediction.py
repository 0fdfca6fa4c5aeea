"""The planner's predictions for one candidate: memory, disk, speed and a quality prior.

Pure: no I/O, no backend imports. Memory comes from edgepack.plan.memory; decode speed and the
prefill of a PROMPT_TOKENS prompt from the speed model fitted to published llama.cpp
measurements (edgepack.plan.speed_model), with the interval its held-out errors give; quality
is a prior until a build measures it. The published measurements are llama.cpp's: another
runtime is predicted at llama.cpp's speed times a factor, the ratio of the registry's bandwidth
efficiencies until a build on a host measures it (edgepack.plan.speed_calibration: the factors
this host measured, given as `calibration`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..device.hardware import cpu_peak_ops
from ..device.profiles import Profile
from ..export.registry import RUNTIMES, Format, Precision
from ..model.facts import ModelFacts
from .build_host import build_cost
from .memory import kv_cache_bytes, resident, stored_weights
from .speed_fit import fitted, quant_family
from .speed_model import Cluster, Machine, Work, batched_seconds, seconds_per_token
from .student_budget import Training
from .students import Student, pruned_facts, student_loss

GB = 1e9
PROMPT_TOKENS = 128  # first-token latency is budgeted for a prompt of this length
DECODE_CONTEXT = 256  # decode speed is predicted at the context check.py measures
# the host's share of a token where a GPU keeps experts in host RAM: a prior, as in the speed
# model's CPU terms, until measured
CPU_COMPUTE_EFFICIENCY = 0.25  # share of peak ops a runtime reaches in GEMMs

# A mixture-of-experts model reads only the experts each token is routed to, but which ones
# changes from token to token: the runtime cannot stream ahead across them. Each expert matrix
# is still contiguous (Qwen3-30B-A3B: 1.6M weights, ~0.9 MB at 4.5 bpw), so the reads stay
# long. Prior: expert bytes are read at 0.8 of the runtime's dense efficiency, until measured.
MOE_EXPERT_READ_EFFICIENCY = 0.8
# Expert matrices kept in host RAM beside a GPU (llama.cpp's --n-cpu-moe): the CPU computes with
# them while decoding, at the host's bandwidth; a prompt batch of 32 tokens or more computes on
# the GPU (llama.cpp's op_offload), which copies every one of them over PCIe for each prompt.
# PCIe 3.0 x16 (a T4's link) moves ~12 GB/s host to device in practice: a prior until measured.
HOST_TO_GPU_BYTES_PER_S = 12e9
MAX_STREAMS = 64  # a serving runtime's batch (llama-server --parallel, continuous batching)


@dataclass(frozen=True)
class Prediction:
    memory_bytes: int  # peak on the device that holds the weights (VRAM on a GPU)
    host_memory_bytes: int  # peak resident memory of the process on the host
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    disk_bytes: int
    decode_tokens_per_s: float | None  # None for encoders
    first_token_ms: float
    quality: float  # retention vs the fp32 reference: reference ppl / candidate ppl
    parameters: int
    arithmetic: str  # the memory sum, spelled out (edgepack.plan.memory)
    weights_held_bytes: int = 0  # the weights as the runtime holds them (memory.resident)
    buffers_bytes: int = 0  # compute buffers, arenas, output buffers
    # the speed model's inputs, so that a measurement can calibrate it
    # (edgepack.plan.speed_calibration)
    decode_bytes_per_token: int = 0  # weights + KV cache read for each decoded token
    prefill_ops: float = 0.0  # multiply-adds x 2 of a PROMPT_TOKENS prompt
    host_arithmetic: str = ""  # the host's sum, where weights stay there beside a GPU
    # the speed model's interval (10th to 90th percentile of its held-out errors) and basis
    decode_tokens_per_s_low: float | None = None
    decode_tokens_per_s_high: float | None = None
    first_token_ms_low: float = 0.0
    first_token_ms_high: float = 0.0
    speed_basis: str = ""
    # serving: the most streams decoded at once that each keep the decode budget and whose KV
    # caches fit the memory budget (MAX_STREAMS at most), and their tokens/s together
    streams: int = 1
    streams_tokens_per_s: float | None = None
    # the build's own peak memory on the machine that builds it, and the stage that reaches it
    # (edgepack.plan.build_host)
    build_memory_bytes: int = 0
    build_stage: str = ""
    build_disk_bytes: int = 0  # what the build writes (export, bundle, tarball, f16 GGUF)

    @classmethod
    def from_dict(cls, data: dict) -> Prediction:
        """A prediction as a manifest or plan JSON stored it (fields of older versions that
        this one no longer has are dropped)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def predict(
    facts: ModelFacts,
    profile: Profile,
    fmt: Format,
    precision: Precision,
    layers: int | None,
    on_gpu: bool,
    calibration: tuple[float, float] | None = None,
    kv: str | None = None,
    cpu_moe: int | None = None,
    pruned_mlp: float | None = None,
    training: Training | None = None,
) -> Prediction:
    """calibration: (decode, prefill) factors on the fitted llama.cpp speed that a host
    measured for this runtime and precision (edgepack.plan.speed_calibration), instead of the
    registry's prior; kv: one of the runtime's smaller KV-cache types; cpu_moe: on a
    GPU, the experts of this many of the first layers stay in host RAM; layers or pruned_mlp:
    a depth or width student of the model (edgepack.plan.students), trained as `training`
    declares (edgepack.plan.student_budget; None: edgepack's CPU heal)."""
    runtime = RUNTIMES[fmt.runtime]
    teacher, student = facts, Student(layers, pruned_mlp)
    if pruned_mlp is not None:
        facts = pruned_facts(facts, pruned_mlp)
    kept = layers or facts.num_layers
    stored = stored_weights(facts, precision, layers, fmt.runtime)
    layer_params = stored.layer_parameters
    block_bytes = stored.blocks
    head_bits = stored.head_read * 8  # the tied head reads the whole shared matrix every token
    weights = stored.total
    parameters = int(
        layer_params + facts.embedding_parameters + facts.head_parameters + facts.other_parameters
    )
    kv_elem = dict(runtime.kv_options)[kv] if kv else None
    kv_decode = kv_cache_bytes(
        facts,
        layers,
        kv_elem or (runtime.kv_bytes_gpu if on_gpu else runtime.kv_bytes_cpu),
        DECODE_CONTEXT,
        runtime,
    )
    device = "gpu" if on_gpu else "cpu"
    context = profile.budget.context_tokens
    in_host = cpu_moe or 0
    held = resident(
        facts,
        precision,
        layers,
        runtime,
        device,
        context,
        kv_element_bytes=kv_elem,
        host_expert_layers=in_host,
        isa=tuple(profile.hardware.isa),
    )

    hw = profile.hardware
    # a token computes with the dense part of each block and its routed experts only
    expert_share = facts.expert_parameters / max(facts.layer_parameters, 1)
    routed = facts.experts_per_token / facts.num_experts if facts.num_experts else 0.0
    dense_blocks = block_bytes * (1 - expert_share)
    expert_reads = block_bytes * expert_share * routed / MOE_EXPERT_READ_EFFICIENCY
    active_layers = layer_params * (1 - expert_share * (1 - routed))
    active = (
        active_layers
        + facts.head_parameters
        + (facts.embedding_parameters if facts.tie_word_embeddings else 0)
    )
    read_per_token = dense_blocks + expert_reads + head_bits / 8 + kv_decode
    # the host's share: its experts' reads at the host's bandwidth, their multiply-adds on its
    # cores, both after the GPU's part of each token; for a prompt, their copy to the GPU
    host_s = host_copy_s = 0.0
    if on_gpu and in_host:
        share = min(in_host, kept) / kept
        host_reads = expert_reads * share
        read_per_token -= host_reads
        host_bw = hw.memory_bandwidth_gbs * GB * runtime.bandwidth_efficiency
        host_ops = cpu_peak_ops(hw.cores, hw.clock_ghz, hw.isa, precision.bits)
        host_active = layer_params * expert_share * routed * share
        host_s = max(host_reads / host_bw, 2 * host_active / (host_ops * CPU_COMPUTE_EFFICIENCY))
        host_copy_s = stored.experts(facts, in_host, kept) / HOST_TO_GPU_BYTES_PER_S
    work = Work(read_per_token, 2 * active, kept, precision.bits, quant_of(fmt, precision))
    speed = fitted_speed(profile, fmt.runtime, on_gpu, work, host_s, host_copy_s, calibration)
    prefill_s, decode = speed["prefill_s"], speed["decode"]
    streams, together = 1, decode
    if facts.kind != "decoder":
        decode = together = None
    else:
        budget = profile.budget
        limit = (budget.accelerator_memory_gb if on_gpu else budget.memory_gb) * GB
        room = int((limit - held.total_bytes) // max(held.kv_cache_bytes, 1)) + 1
        streams, together = sustained(
            profile, on_gpu, work, kv_decode, decode, min(room, MAX_STREAMS)
        )

    # a mixture of experts loses to quantization like a dense model of the geometric mean of
    # its total and active sizes (a common dense-equivalent rule; a prior until measured)
    size = max(parameters, 1)
    if facts.num_experts:
        idle = layer_params * expert_share * (1 - routed)
        size = max(math.sqrt(parameters * (parameters - idle)), 1)
    quant_factor = min(10.0, max(0.5, math.sqrt(7e9 / size)))
    quant_loss = precision.loss_7b * quant_factor
    quality = 1.0 / ((1 + quant_loss) * (1 + student_loss(teacher, student, training)))

    disk = int(weights * 1.01 + 5_000_000)  # + tokenizer and metadata files
    building = build_cost(
        fmt.name,
        teacher.num_parameters,
        parameters,
        facts.hidden_size,
        facts.vocab_size,
        max(held.total_bytes, held.host_bytes),  # the build host runs it on its CPU
        disk,
    )
    return Prediction(
        memory_bytes=held.total_bytes,
        host_memory_bytes=held.host_bytes,
        weights_bytes=weights,
        kv_cache_bytes=held.kv_cache_bytes,
        overhead_bytes=held.overhead_bytes,
        disk_bytes=disk,
        decode_tokens_per_s=round(decode, 2) if decode is not None else None,
        first_token_ms=round(prefill_s * 1000, 1),
        quality=round(quality, 4),
        parameters=parameters,
        arithmetic=held.arithmetic,
        weights_held_bytes=held.weights_held_bytes,
        buffers_bytes=held.buffers_bytes,
        decode_bytes_per_token=int(read_per_token),
        prefill_ops=2 * active * PROMPT_TOKENS,
        host_arithmetic=held.host_arithmetic,
        decode_tokens_per_s_low=_round(speed["decode_low"] if decode else None),
        decode_tokens_per_s_high=_round(speed["decode_high"] if decode else None),
        first_token_ms_low=round(speed["prefill_low"] * 1000, 1),
        first_token_ms_high=round(speed["prefill_high"] * 1000, 1),
        speed_basis=speed["basis"],
        streams=streams,
        streams_tokens_per_s=_round(together),
        build_memory_bytes=building.peak_bytes,
        build_stage=building.stage,
        build_disk_bytes=building.disk_bytes,
    )


def sustained(
    profile: Profile, on_gpu: bool, work: Work, kv_bytes: float, decode: float, most: int
) -> tuple[int, float]:
    """(streams, tokens/s of them all): the most streams, up to `most`, that a batched decode
    serves while each keeps the profile's decode budget, by the fitted model's batched step
    (edgepack.plan.speed_model.batched_seconds) scaled to this prediction's single stream."""
    coef = fitted()["coefficients"]
    machine = machine_of(profile, on_gpu)
    one = batched_seconds(coef, work, machine, 1, kv_bytes)
    best = (1, decode)
    for streams in range(2, max(most, 1) + 1):
        each = decode * one / batched_seconds(coef, work, machine, streams, kv_bytes)
        if each < profile.budget.decode_tokens_per_s:
            break
        best = (streams, each * streams)
    return best


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def quant_of(fmt: Format, precision: Precision) -> str:
    """The llama.cpp type family the speed model computes with: the GGUF type, or for another
    runtime the llama.cpp type of the same bits."""
    if fmt.name == "gguf":
        return quant_family(precision.name)
    return {4: "q4_k", 8: "q8_0", 16: "f16"}.get(precision.bits, "f32")


def machine_of(profile: Profile, on_gpu: bool) -> Machine:
    """The profile's device as the speed model sees it (all its cores, one cluster)."""
    hw = profile.hardware
    if on_gpu:
        gpu = profile.gpu
        return Machine("gpu", gpu.memory_bandwidth_gbs, gpu_tflops=gpu.fp16_tflops)
    cluster = Cluster(hw.cores, hw.clock_ghz, tuple(hw.isa))
    return Machine("cpu", hw.memory_bandwidth_gbs, hw.arch, threads=hw.cores, clusters=(cluster,))


def fitted_speed(
    profile: Profile,
    runtime: str,
    on_gpu: bool,
    work: Work,
    host_s: float = 0.0,
    host_copy_s: float = 0.0,
    calibration: tuple[float, float] | None = None,
) -> dict:
    """Decode (tok/s) and a PROMPT_TOKENS prefill (s) from the fitted model, with the interval
    of its held-out errors; host_s and host_copy_s: the host's share of a token and the copy of
    its experts to the GPU for a prompt, where a GPU keeps some experts in host RAM. Another
    runtime than llama.cpp: llama.cpp's figures times the ratio of the registry's bandwidth
    efficiencies (decode), or times `calibration`'s (decode, prefill) factors that a host
    measured."""
    fit = fitted()
    machine = machine_of(profile, on_gpu)
    coef = fit["coefficients"]
    registry = RUNTIMES[runtime].bandwidth_efficiency / RUNTIMES["llama.cpp"].bandwidth_efficiency
    scale, prefill_scale = calibration or (registry, 1.0)
    decode_s = seconds_per_token(coef, "decode", work, machine) / scale + host_s
    per_token = seconds_per_token(coef, "prefill", work, machine, PROMPT_TOKENS)
    prefill_s = per_token * PROMPT_TOKENS / prefill_scale + host_copy_s
    dec, pre = fit["spread"][f"{machine.kind}/decode"], fit["spread"][f"{machine.kind}/prefill"]
    decode = 1.0 / decode_s
    basis = (
        f"llama.cpp fitted to {fit['rows']} published measurements ({machine.kind}: decode "
        f"within {dec['median_x']:.2f}x at the median, {dec['worst_x']:.2f}x at worst, on "
        f"{dec['devices']} devices the fit did not see)"
    )
    if calibration:
        basis += (
            f"; {runtime} at {scale:.2f}x llama.cpp's fitted decode and {prefill_scale:.2f}x "
            "its prompt speed (factors measured on a host)"
        )
    elif runtime != "llama.cpp":
        basis += f"; {runtime} at {scale:.2f}x llama.cpp's decode (the registry's prior)"
    return {
        "decode": decode,
        "decode_low": decode / dec["ratio_q90"],
        "decode_high": decode / dec["ratio_q10"],
        "prefill_s": prefill_s,
        # a time: ratio = predicted speed / published, so time spans ratio_q10 .. ratio_q90
        "prefill_low": prefill_s * pre["ratio_q10"],
        "prefill_high": prefill_s * pre["ratio_q90"],
        "basis": basis,
    }
