"""Resident memory of a model as its runtime executes it. Pure: no I/O, no backend imports.

resident(facts, precision, layers, runtime, device, context_tokens) is the peak resident memory
of the process that runs the model, as the sum of
- weights held: the weights in the form the runtime keeps them at its peak (per runtime below:
  llama.cpp's weights read into memory (some repacked, in place of their own), OpenVINO's
  mapped file beside the compiled
  weights at the execution precision, ONNX Runtime's pre-packed GEMM weights);
- KV cache: 2 x layers x KV heads x head dim x the runtime's element bytes x the tokens it holds
  (llama.cpp preallocates its whole context, sliding-window layers at their window;
  openvino-genai and ONNX Runtime grow it);
- buffers: compute buffers, arenas, output buffers, the runtime's tokenizer tables;
- overhead: what the process holds before it loads a model: the interpreter, numpy, the
  runtime's shared libraries (Runtime.overhead_bytes) and the tokenizer's tables.

Every constant says how it was measured. Host figures are peak RSS on the 2-core x86_64 (AVX2)
build host, Python 3.11, the pinned runtimes of constraints.txt, the default model
(SmolLM2-135M-Instruct: 30 layers, hidden 576, 9 heads / 3 KV heads, vocabulary 49,152, tied
embeddings). `tools/memory_bench.py` prints the prediction against check.py's measurement for
every registry row, and README.md "Memory model" holds its table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..export.registry import KQUANT_FALLBACK_BPW, Precision, Runtime
from ..model.facts import ModelFacts
from . import memory_genai
from .llamacpp_repack import Q6_K_BPW, tied_repacked

GB = 1e9
MB = 1e6
F32 = 4
PROMPT_TOKENS = 128  # the prompt the compute buffers are sized for (check.py's timed prompt)
CUDA_HOST_BYTES = 800_000_000  # host RSS of the CUDA libraries a GPU runtime loads
# what llama.cpp's quantizer writes for a k-quant matrix whose rows are not 256 wide: Q6_K ->
# q8_0, Q5_K -> q5_1, Q4_K -> q5_0 (bits per weight with their scales)
# (q4_0's q6_K head too: the default model's q4_0 GGUF holds token_embd.weight as q8_0)
KQUANT_TABLE_FALLBACK_BPW = {Q6_K_BPW: 8.5, 5.5: 6.0, 4.5: 5.5}
# A GGUF's metadata beyond the tensors is mostly the tokenizer (tokens, scores, types, merges):
# the default model's f16 and q8_0 files are 1.85 and 1.89 MB larger than their tensors, ~38
# bytes per vocabulary entry.
GGUF_METADATA_BYTES_PER_TOKEN = 38

# Tokenizer tables per vocabulary entry (tools/memory_bench.py measures both beside its table).
# llama.cpp's own (vocabulary, merges, piece cache): loading the default model's GGUF with
# vocab_only=True (llama_model_load_from_file) added 18.1 MB for 49,152 tokens and 48,900
# merges. The kit's HFTokenizer (the `tokenizers` package on tokenizer.json, which the OpenVINO
# and ONNX Runtime runners load): 36.7 MB for the same vocabulary.
TOKENIZER_BYTES_PER_TOKEN = {
    "llama.cpp": 368,
    "openvino": 747,
    "onnxruntime": 747,
    "onnxruntime-genai": 747,  # the same HFTokenizer
}
# llama.cpp's context beyond its KV cache and compute graph (model and context structs, the
# backend scheduler, OpenMP threads): fitted as the mean remainder of the seven gguf rows of
# tools/memory_bench.py (measured peak minus every other term: 5.4 to 7.6 MB, mean 6.5).
LLAMACPP_CONTEXT_BYTES = 6.5 * MB
# OpenVINO's model graphs per transformer layer: the kit's read_model of the IR (for logits()),
# openvino-genai's model and the compiled one (node objects, small constants, the plugin's
# memory descriptors). openvino-genai's LLMPipeline creation alone raised RssAnon by 61-92 MB
# for the default model's exports (4,270-5,709 IR nodes, 30 layers); fitted as the mean remainder
# of the five openvino rows of tools/memory_bench.py (measured peak minus every other term:
# 2.2 to 2.8 MB a layer, mean 2.5).
OPENVINO_GRAPH_BYTES_PER_LAYER = 2.5 * MB
# Bits per block weight of the f32 scales and zero points the CPU plugin keeps for grouped int4
# weights (group 64 for the default model: 32 bits each per group; symmetric int4 has no zero
# point; int4_mixed has 80 % of its block weights in int4).
OPENVINO_GROUP_CONSTANTS_BPW = {"int4": 1.0, "int4_sym": 0.5, "int4_mixed": 0.8}
# ONNX Runtime, measured on sessions of the default model's exports (onnxruntime.InferenceSession
# with session.disable_prepacking and/or graph optimizations off, RSS after creation):
# - the session itself (graph, kernels, allocation plans) with neither pre-packing nor
#   optimizations: 35-37 MB above the process before it (external data stays mapped, untouched);
ONNXRUNTIME_SESSION_BYTES = 37 * MB
# - what pre-packing holds, in bits per block weight: fp32 MatMul weights 415 MB for 425 MB
#   (MLAS's packed B); 8-bit MatMulNBits 127 MB for 106M weights; 4-bit 52 MB (the 4-bit data,
#   its scales staying in the file); int4_mixed's 4/8-bit mix 74.5 MB, as its share predicts;
ONNXRUNTIME_PACKED_BPW = {32: 31.3, 8: 9.56, 4: 3.92}
_NBITS_STORED_BPW = (4.5625, 8.625)  # MatMulNBits block 64 with scales and zero points
# - the KV cache a decode step keeps alive: the past it was fed (numpy), the present in the
#   arena and the present returned as numpy. Generating 1,400 tokens after a 128-token prompt
#   (int8 export, the kit's runner) grew the peak by 197 MB for 62 MB more KV cache.
ONNXRUNTIME_KV_COPIES = 3


# Exports that write a tied head as a matrix of its own (runtime, model type): optimum's ONNX
# export of Gemma 3 holds the head as a transposed initializer beside the embedding (262,144 x
# 640 each; int8 quantizes it to MatMulNBits, the embedding Gather stays fp32), where the
# default model's head is a Transpose of its embedding.
UNTIED_EXPORTS = frozenset({("onnxruntime", "gemma3_text")})


@dataclass(frozen=True)
class StoredWeights:
    """The weights as the artifact stores them, in bytes."""

    layer_parameters: float  # parameters of the transformer blocks kept
    blocks: float  # the blocks' linear weights
    embedding: float  # the token embedding (the one shared matrix when tied)
    head: float  # the untied output head (0 when tied)
    other: float  # norms, biases, positions: fp32
    tied: bool

    @property
    def total(self) -> int:
        return int(self.blocks + self.embedding + self.head + self.other)

    @property
    def head_read(self) -> float:
        """The matrix the output head reads for every token."""
        return self.embedding if self.tied else self.head

    def experts(self, facts: ModelFacts, layers: int, kept: int) -> float:
        """The expert matrices of `layers` of the `kept` blocks (a layer's mean share)."""
        share = facts.expert_parameters / max(facts.layer_parameters, 1)
        return self.blocks * share * min(layers, kept) / max(kept, 1)


def stored_weights(
    facts: ModelFacts, precision: Precision, layers: int | None, runtime: str = ""
) -> StoredWeights:
    kept = layers or facts.num_layers
    layer_params = facts.layer_parameters * kept / facts.num_layers
    untied = (runtime, facts.model_type) in UNTIED_EXPORTS or precision.untied
    tied = facts.tie_word_embeddings and not untied
    head_params = facts.embedding_parameters if facts.tie_word_embeddings else facts.head_parameters
    embed_bpw = table_bpw(facts, precision, precision.tied_bpw if tied else precision.embed_bpw)
    return StoredWeights(
        layer_parameters=layer_params,
        blocks=layer_params * block_bpw(facts, precision) / 8,
        embedding=facts.embedding_parameters * embed_bpw / 8,
        head=0.0 if tied else head_params * table_bpw(facts, precision, precision.head_bpw) / 8,
        other=facts.other_parameters * F32,
        tied=tied,
    )


def block_bpw(facts: ModelFacts, precision: Precision) -> float:
    """Bits per block weight; llama.cpp k-quants fall back where rows are not 256 wide."""
    if precision.kquant and facts.hidden_size % 256:
        return max(precision.block_bpw, KQUANT_FALLBACK_BPW[precision.name])
    return precision.block_bpw


def table_bpw(facts: ModelFacts, precision: Precision, bpw: float) -> float:
    """Bits per weight of an embedding or head matrix: a k-quant type there falls back like the
    blocks' where rows are not 256 wide (the default model's q6_k, q5_k_m and q4_k_m GGUFs hold
    token_embd.weight as q8_0)."""
    if facts.hidden_size % 256 and (precision.kquant or bpw == Q6_K_BPW):
        return KQUANT_TABLE_FALLBACK_BPW.get(bpw, bpw)
    return bpw


@dataclass(frozen=True)
class Memory:
    device: str  # "cpu" or "gpu": where the weights are held
    context_tokens: int  # the tokens whose KV cache is held
    weights_bytes: int  # as stored in the artifact
    weights_held_bytes: int  # as the runtime holds them
    kv_cache_bytes: int
    buffers_bytes: int
    overhead_bytes: int  # the process's fixed part (on a GPU: the CUDA context in VRAM)
    total_bytes: int  # on the device that holds the weights (VRAM on a GPU)
    host_bytes: int  # peak resident memory of the process on the host
    arithmetic: str
    host_arithmetic: str = ""  # the host's sum, where weights are held there beside a GPU

    @property
    def held_factor(self) -> float:
        return self.weights_held_bytes / max(self.weights_bytes, 1)

    def to_dict(self) -> dict:
        return asdict(self) | {"held_factor": round(self.held_factor, 3)}


def kv_bytes_per_token(facts: ModelFacts, layers: int | None, element_bytes: float) -> float:
    """KV-cache bytes one token adds across the layers kept (every layer within its window)."""
    if facts.kind != "decoder":
        return 0.0
    kept = layers or facts.num_layers
    return 2 * kept * facts.num_key_value_heads * facts.head_dim * element_bytes


def kv_cache_bytes(
    facts: ModelFacts, layers: int | None, element_bytes: float, tokens: int, runtime: Runtime
) -> int:
    """The KV cache of `tokens` tokens: full-attention layers hold every token, sliding-window
    layers, where the runtime caches them at their window, min(tokens, window + slack padded
    to 256) cells (llama.cpp's SWA cache)."""
    per_token = kv_bytes_per_token(facts, layers, element_bytes)
    if not (facts.sliding_layers and facts.model_type in runtime.windowed_kv):
        return int(per_token * tokens)
    kept = layers or facts.num_layers
    sliding = round(facts.sliding_layers * kept / facts.num_layers)  # a student keeps them spread
    cells = min(tokens, _pad(facts.sliding_window + runtime.kv_window_slack, 256))
    return int(per_token / kept * ((kept - sliding) * tokens + sliding * cells))


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def resident(
    facts: ModelFacts,
    precision: Precision,
    layers: int | None,
    runtime: Runtime,
    device: str,
    context_tokens: int,
    prompt_tokens: int = PROMPT_TOKENS,
    kv_element_bytes: float | None = None,
    host_expert_layers: int = 0,
    isa: tuple[str, ...] = (),
) -> Memory:
    """The resident-memory breakdown of this row run by `runtime` on `device` ("cpu"/"gpu"),
    holding the KV cache of `context_tokens` tokens (in elements of `kv_element_bytes`, the
    runtime's default when None). On a GPU, the expert matrices of the first
    `host_expert_layers` blocks stay in host RAM (llama.cpp's --n-cpu-moe): llama.cpp maps the
    GGUF and releases the ranges it copied to the GPU, so the host keeps those tensors' pages.
    `isa`: the CPU's features (a profile's hardware.isa), which decide what llama.cpp repacks."""
    stored = stored_weights(facts, precision, layers, runtime.name)
    weights = stored.total
    kv_type = f", {kv_element_bytes:g} B an element" if kv_element_bytes else ""
    if device == "gpu":
        element = kv_element_bytes or runtime.kv_bytes_gpu
        kv = kv_cache_bytes(facts, layers, element, context_tokens, runtime)
        overhead = runtime.gpu_overhead_bytes
        in_host = int(stored.experts(facts, host_expert_layers, layers or facts.num_layers))
        on_gpu = weights - in_host
        total = on_gpu + kv + overhead
        held_text = f"{on_gpu / GB:.2f}"
        if in_host:
            held_text += f" (of {weights / GB:.2f}: experts of {host_expert_layers} layers in host)"
        arithmetic = (
            f"{total / GB:.2f} GB = weights {held_text} + KV cache {kv / GB:.2f} "
            f"({context_tokens} tokens{kv_type}) + CUDA runtime {overhead / GB:.2f}"
        )
        host = runtime.overhead_bytes + CUDA_HOST_BYTES + in_host
        host_text = ""
        if in_host:
            host_text = (
                f"{host / GB:.2f} GB = experts of {host_expert_layers} layers "
                f"{in_host / GB:.2f} + runtime {runtime.overhead_bytes / GB:.2f} "
                f"+ CUDA libraries {CUDA_HOST_BYTES / GB:.2f}"
            )
        return Memory(
            device,
            context_tokens,
            weights,
            weights,
            kv,
            0,
            overhead,
            total,
            host,
            arithmetic,
            host_text,
        )
    element = kv_element_bytes or runtime.kv_bytes_cpu
    kv = kv_cache_bytes(facts, layers, element, context_tokens, runtime)
    model = RUNTIME_MODELS[runtime.name]
    held = int(model.held(stored, precision, facts, isa))
    buffers = int(model.buffers(stored, precision, facts, layers, kv, prompt_tokens))
    overhead = runtime.overhead_bytes + int(tokenizer_bytes(runtime.name, facts))
    total = held + kv + buffers + overhead
    factor = held / max(weights, 1)
    held_text = f"{weights / GB:.2f}"
    if abs(factor - 1) >= 0.005:  # the resident factor: what the runtime holds of the file
        held_text = f"{held / GB:.2f} ({weights / GB:.2f} stored x{factor:.2f})"
    arithmetic = (
        f"{total / GB:.2f} GB = weights {held_text} + KV cache {kv / GB:.2f} "
        f"({context_tokens} tokens{kv_type}) + buffers {buffers / GB:.2f} "
        f"+ runtime {overhead / GB:.2f}"
    )
    return Memory(
        device, context_tokens, weights, held, kv, buffers, overhead, total, total, arithmetic
    )


def tokenizer_bytes(runtime: str, facts: ModelFacts) -> float:
    """The tokenizer's tables in the runtime's process (part of its fixed overhead)."""
    return facts.vocab_size * TOKENIZER_BYTES_PER_TOKEN[runtime]


def activation_bytes(facts: ModelFacts, tokens: int, kv_tokens: int) -> float:
    """f32 activations live at once while a prompt of `tokens` is computed: the attention scores
    and their softmax (heads x tokens x kv_tokens, twice) and the widest block tensors (gate, up
    and their product; input, norm, attention output and residual)."""
    heads = facts.num_attention_heads
    wide = 3 * facts.intermediate_size + 4 * facts.hidden_size
    return tokens * (2 * heads * kv_tokens + wide) * F32


# -- llama.cpp ---------------------------------------------------------------------------------
def _held_llamacpp(stored: StoredWeights, precision: Precision, facts: ModelFacts, isa=()) -> float:
    """The kit's runner reads the GGUF into memory on a CPU (use_mmap off): every tensor is held
    once, the ones the CPU backend repacks (REPACKED_TYPES) into an interleaved copy of the same
    size in its CPU_REPACK buffer instead of their own (with the file mapped, both stayed
    resident: 56.95 MiB more for the default model's q4_0 blocks; llama.cpp issues 12149 and
    16761), and the metadata beside them. A tied matrix of a repacked type is held twice: as the
    embedding and, repacked, as the head."""
    metadata = facts.vocab_size * GGUF_METADATA_BYTES_PER_TOKEN
    twice = stored.embedding if stored.tied and tied_repacked(facts, precision, isa) else 0.0
    return stored.total + metadata + twice


def _buffers_llamacpp(stored, precision, facts, layers, kv, prompt_tokens) -> float:
    """The compute graph's activations for the prompt (the compute buffer is
    reserved for n_ubatch = 512 tokens with 512 rows of logits, 99.4 MiB for the default
    model, but only what a prompt computes is touched) and the context's own structures. The
    KV cache is cleared at creation, so all of it is resident: it is the KV term."""
    kv_tokens = -(-prompt_tokens // 256) * 256  # the attended KV cells, padded to 256
    return activation_bytes(facts, prompt_tokens, kv_tokens) + LLAMACPP_CONTEXT_BYTES


# -- OpenVINO (openvino-genai) -----------------------------------------------------------------
def _held_openvino(stored: StoredWeights, precision: Precision, facts: ModelFacts, isa=()) -> float:
    """The IR's .bin is mmap'd and every page is touched when the first inference compiles the
    weights; the CPU plugin then holds its own copy in its layout at the stored precision. With
    INFERENCE_PRECISION_HINT=f32 the activations run in f32, but fp16 weights stay fp16 (its
    FullyConnected kernels decompress them), as int8/int4 compressed weights stay compressed.
    Measured with openvino-genai's LLMPipeline alone, across its first generate: RssFile grew by
    the .bin's size + 40-45 MB of plugin code and RssAnon by the .bin's size + 4 MB for the
    fp16, int8, int4 and int4_mixed exports (fp16: +309 and +273 MB for a 269 MB .bin; an f32
    copy would have added 538 MB)."""
    return 2 * stored.total


def _buffers_openvino(stored, precision, facts, layers, kv, prompt_tokens) -> float:
    """The model graphs (the kit's read_model of the IR, openvino-genai's model and the
    compiled one: their node objects and small constants), the f32 group scales and zero
    points of grouped int4 weights, and the activations of the prompt."""
    kept = layers or facts.num_layers
    groups = stored.layer_parameters * OPENVINO_GROUP_CONSTANTS_BPW.get(precision.name, 0)
    return (
        OPENVINO_GRAPH_BYTES_PER_LAYER * kept
        + groups / 8
        + activation_bytes(facts, prompt_tokens, prompt_tokens)
    )


# -- ONNX Runtime ------------------------------------------------------------------------------
def _held_onnxruntime(
    stored: StoredWeights, precision: Precision, facts: ModelFacts, isa=()
) -> float:
    """External data is mmap'd and read tensor by tensor: what stays is what the kernels
    pre-pack (ONNXRUNTIME_PACKED_BPW). The embedding Gather reads its rows from the mapping
    (only the looked-up rows are touched); a tied head is a Transpose of it, folded into a
    transposed fp32 copy at session creation and packed (106 MB for the default model's
    113 MB matrix, in every export)."""
    head_bpw = precision.tied_bpw if stored.tied else precision.head_bpw
    head = stored.head_read * _packed_bpw(head_bpw) / head_bpw
    return stored.layer_parameters * _packed_bpw(precision.block_bpw) / 8 + head + stored.other


def _packed_bpw(stored_bpw: float) -> float:
    """Bits per weight ONNX Runtime's pre-packed copy holds: fp32 as packed; MatMulNBits
    weights by their share of 8-bit blocks among 4-bit ones (from the stored bits)."""
    if stored_bpw >= 16:
        return ONNXRUNTIME_PACKED_BPW[32] * stored_bpw / 32
    low, high = _NBITS_STORED_BPW
    share8 = min(1.0, max(0.0, (stored_bpw - low) / (high - low)))
    return ONNXRUNTIME_PACKED_BPW[4] * (1 - share8) + ONNXRUNTIME_PACKED_BPW[8] * share8


def _buffers_onnxruntime(stored, precision, facts, layers, kv, prompt_tokens) -> float:
    """The session's structures plus the larger of two moments. At load, the folded transposed
    head beside its packed copy, while the tokenizer is not loaded yet (the runner creates the
    session first: its tables, counted in the overhead, stand in for part of the transient).
    While running, the arena: the prompt's logits (in the arena and again as numpy), its
    activations, and the KV copies of a decode step."""
    folded = stored.head_read * ONNXRUNTIME_PACKED_BPW[32] / 32 if stored.tied else 0.0
    load = folded - tokenizer_bytes("onnxruntime", facts)  # 110.5 MB above the session's end
    logits = 2 * prompt_tokens * facts.vocab_size * F32
    run = logits + activation_bytes(facts, prompt_tokens, prompt_tokens)
    run += (ONNXRUNTIME_KV_COPIES - 1) * kv
    return ONNXRUNTIME_SESSION_BYTES + max(load, run)


@dataclass(frozen=True)
class RuntimeMemory:
    held: object  # (stored, precision, facts, isa) -> bytes of weights held
    buffers: object  # (stored, precision, facts, layers, kv_bytes, prompt_tokens) -> bytes


RUNTIME_MODELS = {
    "llama.cpp": RuntimeMemory(_held_llamacpp, _buffers_llamacpp),
    "openvino": RuntimeMemory(_held_openvino, _buffers_openvino),
    "onnxruntime": RuntimeMemory(_held_onnxruntime, _buffers_onnxruntime),
    "onnxruntime-genai": RuntimeMemory(memory_genai.held, memory_genai.buffers),
}
