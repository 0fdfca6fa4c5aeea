"""Which weights llama.cpp's CPU backend repacks, by the CPU's features, and so which tied
embeddings it holds twice (edgepack.plan.memory's llama.cpp model). Pure data and arithmetic."""

from __future__ import annotations

from ..export.registry import GGUF_MIXED_KEEP, GGUF_TABLE_TYPES, Precision, target_bpw
from ..model.facts import ModelFacts

Q6_K_BPW = 6.5625
# The weight types llama.cpp's CPU backend repacks into an interleaved copy for its matrix
# multiplies, by the CPU feature that selects the layout, with the row multiple each layout needs
# (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type, in the llama.cpp that
# llama-cpp-python 0.3.36 vendors). A matrix that is also a lookup table cannot be repacked: the
# one matrix a tied embedding and head share stays as stored for the embedding's row lookups and
# is held again, repacked, as the head (this host, AVX2: the default model's iq4_nl GGUF held
# 15.3 MiB in llama.cpp's CPU buffer, its embedding, beside 72.1 MiB repacked, its head among
# them; its check measured 215 MB where the file alone predicted 199; on an emulated Cortex-A76,
# whose dot products repack q8_0 too, its q8_0 and q4_k_m GGUFs held their 28.7 MiB q8_0 table
# twice: 165.1 and 127.6 MiB of buffers, against 136.4 and 98.9 on this host; README.md).
_ARM_REPACKED = {"q4_0": 4, "iq4_nl": 4, "q8_0": 4, "mxfp4": 4, "q4_K": 8, "q5_K": 8, "q6_K": 8}
REPACKED_TYPES = {
    "avx2": {"q4_0": 8, "q4_K": 8, "iq4_nl": 8, "mxfp4": 8},
    "avx512": {"q2_K": 8},
    "dotprod": _ARM_REPACKED,  # with NEON
    "i8mm": _ARM_REPACKED,
}
# A size target's tied matrix takes one of gguf_allocate's ladder types, chosen by measured error
# at export; before that, the largest type whose bits per weight the target reaches
_LADDER_BPW = ((8.5, "q8_0"), (6.0, "q5_1"), (5.0, "q4_1"), (0.0, "iq4_nl"))


def tied_gguf_type(facts: ModelFacts, precision: Precision) -> str:
    """llama.cpp's type of the one matrix a tied embedding and head share in this precision's
    GGUF: the type the export sets for it, else llama.cpp's default at its bits (k-quants fall
    back where rows are not 256 wide: Q6_K to q8_0, Q5_K to q5_1, Q4_K to q5_0)."""
    name = precision.name
    explicit = GGUF_TABLE_TYPES | GGUF_MIXED_KEEP
    if name in explicit:
        return explicit[name]
    target = target_bpw(name)
    if target is not None:
        return next(kind for floor, kind in _LADDER_BPW if target >= floor)
    bpw = precision.tied_bpw
    wide = facts.hidden_size % 256 == 0
    if bpw == Q6_K_BPW:
        return "q6_K" if wide else "q8_0"
    if bpw == 5.5:
        return "q5_K" if wide else "q5_1"
    if bpw == 4.5:
        return "q4_K" if wide else "q5_0"
    return {16: "f16", 8.5: "q8_0"}.get(bpw, "f16")


def tied_repacked(facts: ModelFacts, precision: Precision, isa) -> bool:
    """Whether a CPU with these features (a profile's `isa`) repacks the tied matrix's type."""
    kind = tied_gguf_type(facts, precision)
    for feature in isa or ():
        rows = REPACKED_TYPES.get(feature, {}).get(kind)
        if rows and facts.vocab_size % rows == 0:
            return True
    return False
