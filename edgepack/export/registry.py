"""The registry: every export format, its runtime and its precisions, as one table of data.

Pure data, no backend imports: the planner reads it to size candidates; edgepack.export.support
intersects its model types with what each exporter supports.

Bits per weight (bpw) include the quantization scales and zero points. Each precision states the
bpw of the transformer blocks' linear weights, of the token embedding, of the output head and of
the one matrix a tied embedding and head share, and a prior on quality:
`loss_7b`, the relative perplexity increase measured for a 7B model (llama.cpp's published
LLaMA-7B table for the GGUF types; ONNX Runtime and NNCF round-to-nearest results for the others).
Smaller models lose more: the planner scales it by model size until measured values exist.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..model.config import DECODERS, ENCODERS

CPU = ("cpu",)
CPU_GPU = ("cpu", "gpu")
GPU = ("gpu",)


@dataclass(frozen=True)
class Precision:
    name: str  # the format's own name: q4_k_m, int4_sym, fp32, ...
    alias: str | None  # the portable name it answers to: fp16, int8, int4
    bits: int  # nominal weight bits
    block_bpw: float  # linear weights of the transformer blocks
    embed_bpw: float  # token embedding (untied)
    head_bpw: float  # output head (untied)
    tied_bpw: float  # the one matrix a tied embedding and head share
    loss_7b: float  # prior: relative perplexity increase at 7B parameters
    devices: tuple[str, ...]  # where the runtime executes this precision
    kquant: bool = False  # llama.cpp k-quant: rows must be a multiple of 256 columns
    # calibration text: "none" (data-free), "optional" (data-aware when the user gives a text),
    # "required" (always data-aware; the built-in text when none is given).
    # edgepack.measure.calibration_text
    calibration: str = "none"
    mixed: str | None = None  # a 4-bit row's mixed-precision fallback: the name of that row
    untied: bool = False  # the export writes a tied head as a matrix of its own (head_bpw)


@dataclass(frozen=True)
class Runtime:
    name: str
    package: str  # what the device installs
    # peak RSS of a process that has imported what the kit's measuring process imports (numpy,
    # the kit, the runtime), before any model or tokenizer (edgepack.plan.memory)
    overhead_bytes: int
    kv_bytes_cpu: float  # bytes per KV-cache element on the CPU (with its scales)
    kv_bytes_gpu: float
    bandwidth_efficiency: float  # share of memory bandwidth reached while decoding
    gpu_overhead_bytes: int = 0  # CUDA context and workspace in VRAM
    kv_preallocated: bool = False  # the whole context's KV cache is allocated at load
    # model types whose sliding-window layers the runtime caches at their window, not the
    # whole context (edgepack.memory.kv_cache_bytes)
    windowed_kv: frozenset[str] = frozenset()
    kv_window_slack: int = 0  # cells held beyond the window (a micro-batch)
    # smaller KV-cache types the runtime offers beside its default: (name, bytes per element),
    # a plan dimension chosen only when the default does not fit (edgepack.plan.planner)
    kv_options: tuple[tuple[str, float], ...] = ()
    # keeps the expert matrices of a mixture of experts in host RAM, computed by the CPU, while
    # the rest runs on the GPU (llama.cpp's --n-cpu-moe: tensor buffer-type overrides)
    expert_offload: bool = False


@dataclass(frozen=True)
class Format:
    name: str
    runtime: str
    # Hugging Face model_type values edgepack's export, validation and kit handle in this
    # format; what the exporter itself supports is edgepack.export.support's to say
    model_types: frozenset[str]
    precisions: tuple[Precision, ...]

    def precision(self, name: str) -> Precision | None:
        for p in self.precisions:
            if name in (p.name, p.alias):
                return p
        bpw = target_bpw(name)
        if bpw is not None and self.name in SIZE_TARGETS:
            return size_target(self.name, bpw)
        return None


MB = 1_000_000

# Overheads: peak RSS of a fresh process that does what the kit's measuring process does before
# it loads a model, without the tokenizer (tools/memory_bench.py's baselines, printed beside its
# table): llama.cpp imported with its backend initialised 44 MB; OpenVINO with a Core 68 MB plus
# openvino-genai's Tokenizer, which compiles the tokenizer models and so loads the CPU plugin,
# 43-48 MB (111-116 MB in three runs); ONNX Runtime 54 MB. The tokenizer's tables are counted
# by edgepack.plan.memory from the vocabulary size. KV elements: llama.cpp f16 K and V, its whole
# n_ctx allocated and cleared at load; OpenVINO's CPU plugin reports KV_CACHE_PRECISION u8 (x86)
# with an f32 scale and zero point per head and token (64 elements): 1.125 bytes; ONNX Runtime fp32.
# Decode efficiencies come from FACTS.md's measurements on a 2-core x86 host (numpy read
# bandwidth 15.6 GB/s): llama.cpp q8_0 reached ~13 GB/s (0.8), OpenVINO GenAI int8 ~11 GB/s
# (0.7), ONNX Runtime ~0.6.
# llama.cpp gives Gemma 2 and Gemma 3 an SWA cache of min(context, window + n_ubatch) cells
# (padded to 256) when swa_full is off, as the kit's runner sets it (llama-kv-cache-iswa.cpp);
# it runs Mistral v0.1 and Phi-3 with full attention (their SWA is disabled there). OpenVINO
# and ONNX Runtime keep every past token of every layer.
# KV-cache types: llama.cpp's type_k / type_v q8_0 (32 values in 34 bytes; a quantized V cache
# needs flash attention, which the kit's runner then turns on). OpenVINO's CPU plugin already
# holds its KV cache in u8 on x86 (KV_CACHE_PRECISION), the smallest it offers.
_LLAMACPP_SWA = frozenset({"gemma2", "gemma3_text"})
RUNTIMES = {
    r.name: r
    for r in (
        Runtime(
            "llama.cpp", "llama-cpp-python", 44 * MB, 2, 2, 0.8, 500 * MB, True,
            windowed_kv=_LLAMACPP_SWA, kv_window_slack=512, kv_options=(("q8_0", 34 / 32),),
            expert_offload=True,
        ),
        Runtime("openvino", "openvino-genai", 113 * MB, 1.125, 2, 0.7),
        Runtime("onnxruntime", "onnxruntime", 54 * MB, 4, 2, 0.6, 500 * MB),
        # 38 MiB after numpy, the kit, onnxruntime_genai and tokenizers; fp32 KV on the CPU;
        # int4 decoded the default model at 133 tok/s on 2 cores (~11 GB/s of weights read)
        Runtime("onnxruntime-genai", "onnxruntime-genai", 40 * MB, 4, 2, 0.7),
    )
}

# k-quant rows need 256 columns; llama.cpp falls back to q5_0/q8_0 for narrower rows.
_Q6K, _Q5K, _Q4K = 6.5625, 5.5, 4.5
_CAL = {"calibration": "optional"}  # data-aware when a calibration text is given
_REQ = {"calibration": "required"}  # always data-aware: the built-in text when none is given
_KQ = {"kquant": True, **_REQ}
_MIX, _OVMIX = "q4_k_m_mixed", "int4_mixed"  # the mixed-precision rows

FORMATS = {
    f.name: f
    for f in (
        Format(
            "gguf",
            "llama.cpp",
            DECODERS | ENCODERS,
            (
                Precision("f16", "fp16", 16, 16, 16, 16, 16, 0.0, CPU_GPU),
                Precision("q8_0", "int8", 8, 8.5, 8.5, 8.5, 8.5, 0.00007, CPU_GPU),
                Precision("q6_k", None, 6, _Q6K, _Q6K, _Q6K, _Q6K, 0.0007, CPU_GPU, **_KQ),
                Precision("q5_k_m", None, 5, 5.7, _Q5K, _Q6K, _Q6K, 0.0024, CPU_GPU, **_KQ),
                Precision(
                    "q4_k_m", "int4", 4, 4.9, _Q4K, _Q6K, _Q6K, 0.009, CPU_GPU, **_KQ, mixed=_MIX,
                ),
                # q4_k_m is llama.cpp's own mix of types: the mixed fallback of q4_0
                Precision(
                    "q4_0", None, 4, 4.5, 4.5, _Q6K, _Q6K, 0.037, CPU_GPU, **_REQ, mixed="q4_k_m",
                ),
                # q4_k_m with the first and the last block, the embedding and the head at q8_0.
                # Default model: 107.8 MB vs 105.5; WikiText-2 retention 0.960 vs 0.963 (4096
                # tokens, intervals 0.943-0.975 and 0.946-0.978: no gain there; 0.964 vs 0.952
                # on the project's own 512-token text; data-free)
                Precision(
                    _MIX, None, 4, 5.15, 8.5, 8.5, 8.5, 0.007, CPU_GPU, **_KQ,
                ),
                # block-32 types, which fit rows of any multiple of 32, for every matrix, with
                # an importance matrix that covers the output head (and so a tied embedding).
                # q4_1: 4 bits with an fp16 scale and minimum per 32 weights, the embedding and
                # head in q5_1 (5 bits, 6.0 bpw). iq4_nl: 4 bits on a non-uniform grid with an
                # fp16 scale, every matrix. Default model, WikiText-2 4096 tokens: q4_1 0.987
                # (95 % 0.983-0.992) at 5.32 bpw, iq4_nl 0.869 (0.850-0.891) at 4.61 bpw. Their
                # priors keep the ratio of their measured loss (1/retention - 1) to q5_k_m's,
                # measured the same way (0.991: loss 0.0088), on q5_k_m's published 0.0024:
                # q4_1 1.5x, iq4_nl 17x (tools/quant_table.py). The same ratio gives q4_k_m
                # 0.0087 against its published 0.009. Gemma-3-270M: q4_1 0.986, iq4_nl 0.849
                # (a larger loss, which its q5_k_m, at 1.000, cannot scale; iq4_nl's prior
                # predicts 0.83 there). llama.cpp's own LLaMA-7B figure for Q4_1, +0.1585 ppl
                # (0.027), was measured without an importance matrix
                Precision("q4_1", None, 4, 5.0, 6.0, 6.0, 6.0, 0.0036, CPU_GPU, **_REQ),
                Precision("iq4_nl", None, 4, 4.5, 4.5, 4.5, 4.5, 0.041, CPU_GPU, **_REQ),
            ),
        ),
        Format(
            "openvino",
            "openvino",
            DECODERS | ENCODERS,
            (
                Precision("fp16", "fp16", 16, 16, 16, 16, 16, 0.0, CPU),
                # per-channel int8 asymmetric: fp16 scale + u8 zero point per row
                Precision("int8", "int8", 8, 8.05, 8.05, 8.05, 8.05, 0.001, CPU),
                # int4 asymmetric, group 128 (64 where 128 does not divide): fp16 scale + u4
                # zero point per group; embeddings and head stay int8 (NNCF's backup precision)
                Precision(
                    "int4", "int4", 4, 4.3, 8.05, 8.05, 8.05, 0.02, CPU, **_CAL, mixed=_OVMIX
                ),
                Precision(
                    "int4_sym", None, 4, 4.25, 8.05, 8.05, 8.05, 0.03, CPU, **_CAL, mixed=_OVMIX
                ),
                # int4 for 80 % of the block weights, the most sensitive 20 % in int8.
                # Default model: 104.8 MB vs 94.7; WikiText-2 retention 0.863 vs 0.811 (data-free)
                Precision(_OVMIX, None, 4, 5.1, 8.05, 8.05, 8.05, 0.01, CPU, **_CAL),
                # int4 asymmetric in groups of 32 (an fp16 scale and a u4 zero point: 4.625
                # bpw), data-aware AWQ and scale estimation on the calibration text (the built-in
                # one by default); int4_g32 keeps the embedding and head in int8, int4_all puts
                # them in int4 too (NNCF's all_layers; a tied pair once). Default model,
                # WikiText-2 4096 tokens: 0.908 at 5.52 bpw, 0.824 at 4.80. Priors: their loss
                # against gguf q5_k_m's measured loss, on its published 0.0024 (as gguf q4_1)
                Precision("int4_g32", None, 4, 4.625, 8.05, 8.05, 8.05, 0.028, CPU, **_REQ),
                Precision("int4_all", None, 4, 4.625, 4.625, 4.625, 4.625, 0.058, CPU, **_REQ),
            ),
        ),
        Format(
            "onnx",
            "onnxruntime",
            DECODERS | ENCODERS,
            (
                Precision("fp32", None, 32, 32, 32, 32, 32, 0.0, CPU),
                Precision("fp16", "fp16", 16, 16, 16, 16, 16, 0.0, GPU),
                # weight-only int8 (MatMulNBits, 8 bits, block 64: fp32 scale + u8 zero point
                # per block). Dynamic int8 (quantize_dynamic) quantizes activations per tensor
                # and lost too much on the default model (top-1 0.59). The embedding Gather, and
                # a head tied to it, stay fp32
                Precision("int8", "int8", 8, 8.625, 32, 8.625, 32, 0.001, CPU),
                # static int8 (quantize_static QDQ, activation ranges calibrated on a text), the
                # MLP output projections as int8's MatMulNBits; the output head stays fp32.
                # Default model: WikiText-2 retention 0.929 vs int8's 0.997
                Precision(
                    "int8_static", None, 8, 8.2, 32, 32, 32, 0.013, CPU, calibration="required"
                ),
                # MatMulNBits 4 bits, block 64 (the largest of 128/64/32 dividing the model's
                # dimensions): fp32 scale + 4-bit zero point per block; embedding as for int8
                Precision("int4", "int4", 4, 4.5625, 32, 4.5625, 32, 0.03, CPU_GPU, mixed=_OVMIX),
                # int4 with the first and the last block and the MLP output projections at 8
                # bits. Default model: 195.0 MB vs 178.8; WikiText-2 retention 0.862 vs 0.793
                Precision(_OVMIX, None, 4, 5.8, 32, 4.5625, 32, 0.014, CPU_GPU),
            ),
        ),
        # onnxruntime-genai's model builder and runtime (decoders; its 0.15.2 builder fails on
        # a Phi-3 checkpoint with KeyError 'multi_cache'): MatMulNBits block 32,
        # symmetric (an fp32 scale per 32 weights: 4 + 1 and 8 + 1 bits). Default model,
        # WikiText-2 retention over 4096 tokens: int8 0.995, int4 0.817, int4_mixed 0.911
        # (int4 re-measured with builder 0.15.2: 0.772, 0.732-0.812; asymmetric, is_symmetric=
        # false with algo_config=rtn: 0.734 at 5.27 bpw). Not for gemma3_text, though the builder
        # has a class and its int8 keeps 1.000 on Gemma-3-270M: int4's shared 4-bit embedding
        # (63 % of its weights) keeps 0.564 at 78.1 % smaller, int4_mixed 0.779 at 68.6 %, int8
        # keeps the embedding fp32 (3 % smaller), and every precision carries 67 MB of rotary
        # tables for 32k positions
        Format(
            "onnx-genai",
            "onnxruntime-genai",
            frozenset({"llama", "mistral", "qwen2", "qwen3"}),
            (
                Precision("fp32", None, 32, 32, 32, 32, 32, 0.0, CPU),
                # the embedding stays fp32 and the head its own int8 matrix (the builder's
                # shared int8 embedding does not load in onnxruntime-genai 0.15.2)
                Precision("int8", "int8", 8, 9, 32, 9, 32, 0.001, CPU, untied=True),
                # a tied embedding and head share one 4-bit matrix (GatherBlockQuantized)
                Precision("int4", "int4", 4, 5, 32, 5, 5, 0.03, CPU, mixed="int4_mixed"),
                # k_quant_mixed: k-quant int4, the head and the most sensitive layers in int8
                Precision("int4_mixed", None, 4, 6.2, 32, 9, 9, 0.014, CPU),
            ),
        ),
    )
}

# measured on hidden size 576: Q6_K -> q8_0, Q5_K -> q5_1 (6 bpw), Q4_K -> q5_0 (5.5 bpw); q6_k
# keeps ffn_down (1536-wide rows) in q6_K: its blocks average 8.0 bpw (106.4 MB in the GGUF)
KQUANT_FALLBACK_BPW = {"q6_k": 8.0, "q5_k_m": 6.0, "q4_k_m": 5.5, "q4_k_m_mixed": 5.7}
# GGUF precisions whose token embedding and output head (one matrix when tied) take a type of
# their own instead of llama.cpp's default for them (q6_K, q8_0 where rows are not 256 wide):
# block-32 types, which fit any row and need no fallback (FACTS.md, "4-bit methods")
GGUF_TABLE_TYPES = {"q4_1": "q5_1", "iq4_nl": "iq4_nl"}
# mixed precisions: the ggml type of the first and last block, the token embedding and output
GGUF_MIXED_KEEP = {"q4_k_m_mixed": "q8_0"}


# Size targets: a precision named "bpw4.80" is a file of 4.80 bits per weight, its per-tensor
# types chosen by the export to meet that size at the least measured error
# (edgepack.export.gguf_allocate). The range each format's types can reach:
SIZE_TARGETS = {"gguf": (4.6, 8.5)}
_TARGET = re.compile(r"bpw(\d+(?:\.\d+)?)")
# the prior loss at 7B against bits per weight, interpolated in log between the rows above:
# iq4_nl, then llama.cpp's published LLaMA-7B mixes q4_k_m (~4.9 bpw), q5_k_m (5.7), q6_k
# (6.56) and q8_0 (8.5)
_TARGET_LOSS = ((4.5, 0.041), (4.9, 0.009), (5.7, 0.0024), (6.56, 0.0007), (8.5, 0.00007))


def target_name(bpw: float) -> str:
    return f"bpw{bpw:.2f}"


def target_bpw(name: str) -> float | None:
    """The bits per weight a size-target precision names; None for any other precision."""
    match = _TARGET.fullmatch(name)
    return float(match.group(1)) if match else None


def size_target(format_name: str, bpw: float) -> Precision:
    """The precision of a size target; ValueError where the format cannot reach it."""
    low, high = SIZE_TARGETS.get(format_name, (None, None))
    if low is None:
        raise ValueError(
            f"format {format_name} takes no size target; give --bits-per-weight with --format "
            f"{' or '.join(SIZE_TARGETS)}"
        )
    if not low <= bpw <= high:
        raise ValueError(
            f"a {format_name} size target must be {low}-{high} bits per weight, got {bpw:g}: "
            "its smallest and largest types"
        )
    points = [(b, math.log(loss)) for b, loss in _TARGET_LOSS]
    i = max(j for j in range(len(points) - 1) if points[j][0] <= bpw or j == 0)
    (b0, l0), (b1, l1) = points[i], points[i + 1]
    loss = math.exp(l0 + (l1 - l0) * (bpw - b0) / (b1 - b0))
    bits = 4 if bpw < 5.5 else (5 if bpw < 6.5 else 8)
    return Precision(
        target_name(bpw), None, bits, bpw, bpw, bpw, bpw, round(loss, 6), CPU_GPU, **_REQ
    )


def resolve(format_name: str, precision_name: str) -> tuple[Format, Precision]:
    """The format and precision a user named, or a ValueError naming the valid choices."""
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ValueError(f"unknown format {format_name!r}; formats: {', '.join(FORMATS)}")
    precision = fmt.precision(precision_name)
    if precision is None:
        names = sorted({n for p in fmt.precisions for n in (p.name, p.alias) if n})
        raise ValueError(
            f"format {format_name} has no precision {precision_name!r}; choose one of "
            f"{', '.join(names)}"
        )
    return fmt, precision
