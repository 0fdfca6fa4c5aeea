"""The PyTorch model every reference runs (validation, perplexity, task answers): loaded in
float32 where that is small, in bfloat16 where float32 would hold twice the checkpoint.

A model whose float32 weights take more than FP32_REFERENCE_MAX_BYTES (a 0.5B model: the rule
is edgepack.model.facts.reference_dtype, which the planner reads too) is loaded in
bfloat16 for its references: a 7B model's float32 copy (28 GB) does not fit the machines
people build on, its bfloat16 copy (14 GB) does, and the build's own peak stays within 1.5x
the bf16 checkpoint (tools/build_memory.py measures it).

What bfloat16 costs against float32, measured on the default model (SmolLM2-135M; the bf16
model scored as a candidate against the fp32 reference): on WikiText-2 test, 4096 scored
tokens, retention 0.9996 (0.998-1.000), KL 0.0009, top-1 agreement 0.977; on the validation
text, top-1 agreement 0.987 (all 84 confident positions kept); next-token logits up to 1.20
from fp32's (LOGIT_INPUTS), which is why float exports are held to BF16_LOGIT_TOLERANCE
against a bf16 reference (edgepack.measure.validate). A bf16 reference is thus closer to the
fp32 model than a q8_0 export is; every record of a reference says which dtype it ran in.
"""

from __future__ import annotations

from pathlib import Path

from ..model.facts import reference_dtype

__all__ = ["dtype_of", "key_suffix", "load", "reference_dtype"]


def dtype_of(model_dir: Path) -> str:
    """reference_dtype of the model in model_dir (its parameters counted from its headers)."""
    from ..model.facts import read_facts

    return reference_dtype(read_facts(model_dir, trust_remote_code=True).num_parameters)


def key_suffix(dtype: str) -> str:
    """What a cached reference's name adds for its dtype ("" for float32, as before)."""
    return "" if dtype == "float32" else f"-{dtype}"


def load(model_dir: Path, dtype: str, trust_remote_code: bool = False, encoder=False, **kw):
    """The model in dtype, in eval mode: a causal LM, or the base model of an encoder."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModel if encoder else AutoModelForCausalLM
    return cls.from_pretrained(
        model_dir, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **kw
    ).eval()
