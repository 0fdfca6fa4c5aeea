"""onnxruntime-genai's resident memory (edgepack.plan.memory's model for that runtime).

Measured on the default model (tools/memory_bench.py's method: VmHWM of the kit's measuring
process), for the builder's exports at each precision: the process after importing numpy, the
kit, onnxruntime_genai and tokenizers held 38 MiB; og.Model's load then added, beyond the
tokenizer's tables (counted in the overhead), held / stored bytes of
  int4 (MatMulNBits 4 bits, block 32, embedding shared with the head in 4 bits)   2.02
  int4_mixed (k_quant_mixed)                                                       1.90
  int8 (8 bits; the fp32 embedding's unused rows stay unread in the mapping)        0.84
  fp32                                                                             1.40
(MLAS pre-packs the 4-bit blocks beside the loaded data; fp32 gains packed copies). Two
128-token generations of 64 new tokens then added 78 MB for int4: three copies of the prompt's
logits (the generator's output, its numpy copy, the kit's float32 view), with the KV cache the
generator preallocates for its max_length. A fit on one model until memory_bench has rows of
others.
"""

from __future__ import annotations

F32 = 4
HELD_FACTOR = {"int4": 2.02, "int4_mixed": 1.90, "int8": 0.84, "fp32": 1.40}
LOGITS_COPIES = 3


def held(stored, precision, facts) -> float:
    return stored.total * HELD_FACTOR.get(precision.name, 1.4)


def buffers(stored, precision, facts, layers, kv, prompt_tokens) -> float:
    return LOGITS_COPIES * prompt_tokens * facts.vocab_size * F32
