"""onnxruntime-genai's resident memory (edgepack.plan.memory's model for that runtime).

og.Model reads the MatMulNBits weights into memory and MLAS pre-packs them beside what it
keeps; the token embedding, when it is an fp32 Gather (int8's, and int4's of an untied model),
stays in the mapped data file and only the looked-up rows are read. Measured as the rise of
VmHWM over og.Model's load, after importing numpy and onnxruntime_genai, for the builder's
exports of the default model (SmolLM2-135M: tied, 576 wide) and of a random untied Llama of
1.17B parameters (tools/random_model.py --shape 1b: 2048 wide, vocabulary 49,152):
  export                                          MatMulNBits stored   load (MiB)
  default int4 (one 4-bit matrix for both)              82                174
  default int8 (fp32 embedding, int8 head)             147                239
  1B int4 (fp32 embedding)                             640                987
  1B int4_mixed (k_quant_mixed: 285M weights 8-bit)    797               1191 (fitted: 1156)
A line through the two int4 rows gives the session (its intercept, SESSION_BYTES) and the held
bits of a 4-bit weight (stored at 5 bits: 4 and an fp32 scale per block of 32); the int8 row
then gives an 8-bit weight's (stored at 9). A row between the two (int4_mixed) is held by its
share of 8-bit weights, read from its stored bits. fp32 keeps the earlier fit on the default
model, 1.40 times the stored bytes with the session in it, 1.30 without (MLAS's packed fp32
copies beside the loaded weights).
Two 128-token generations of 64 new tokens then added 78 MB for the default model's int4: three
copies of the prompt's logits (the generator's output, its numpy copy, the kit's float32 view),
with the KV cache the generator preallocates for its max_length.
"""

from __future__ import annotations

F32 = 4
MB = 1 << 20
SESSION_BYTES = 54 * MB
STORED_BPW = (5.0, 9.0)  # MatMulNBits block 32: 4 or 8 bits and an fp32 scale per block
HELD_BPW = (7.29, 11.37)  # what og.Model holds per weight of each (the table above)
FP32_HELD_FACTOR = 1.30
LOGITS_COPIES = 3


def held(stored, precision, facts, isa=()) -> float:
    if precision.block_bpw >= 16:
        return stored.total * FP32_HELD_FACTOR
    blocks = stored.blocks * held_bpw(precision.block_bpw) / precision.block_bpw
    head_bpw = precision.tied_bpw if stored.tied else precision.head_bpw
    head = 0.0 if head_bpw >= 16 else stored.head_read * held_bpw(head_bpw) / head_bpw
    return blocks + head + stored.other


def held_bpw(stored_bpw: float) -> float:
    """Bits og.Model holds per MatMulNBits weight, by its share of 8-bit weights among 4-bit
    ones (from the stored bits)."""
    low, high = STORED_BPW
    share8 = min(1.0, max(0.0, (stored_bpw - low) / (high - low)))
    return HELD_BPW[0] * (1 - share8) + HELD_BPW[1] * share8


def buffers(stored, precision, facts, layers, kv, prompt_tokens) -> float:
    return SESSION_BYTES + LOGITS_COPIES * prompt_tokens * facts.vocab_size * F32
