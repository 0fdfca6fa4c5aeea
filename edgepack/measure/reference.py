"""The PyTorch reference that exports are validated against, computed once and cached (in
float32, or bfloat16 for a large model: edgepack.measure.reference_model).

For a decoder: the source tokenizer's ids of the probe strings, fp32 next-token logits for
inputs of different lengths, and the reference's top-1 token at every position of a longer text.
For an encoder: mean-pooled sentence embeddings.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache import content_key, locked, write_atomic
from ..model.facts import ModelFacts
from .probes import AGREEMENT_TEXT, ENCODER_SENTENCES, LOGIT_INPUTS, TOKENIZER_PROBES
from .reference_model import key_suffix, load, reference_dtype


@dataclass
class Reference:
    probes: dict[str, list[int]]  # text -> source tokenizer ids, no special tokens
    inputs: list[list[int]]  # decoder: ids of LOGIT_INPUTS
    logits: list[np.ndarray]  # decoder: [len, vocab] fp32 logits per input
    agreement_ids: list[int]  # decoder: ids of AGREEMENT_TEXT
    agreement_top1: np.ndarray  # decoder: reference argmax at each position
    # decoder: [len, vocab] reference logits of AGREEMENT_TEXT, float16: they are only compared
    # (a 262k vocabulary makes them 0.24 GB in float32); top-1 comes from float32
    agreement_logits: np.ndarray
    sentences: list[str]  # encoder
    embeddings: np.ndarray  # encoder: [n, hidden]
    start: list[int] = field(default_factory=list)  # decoder: ids a fresh context begins with
    dtype: str = "float32"  # what the reference model ran in (edgepack.measure.reference_model)


def start_ids(tok) -> list[int]:
    """What the source tokenizer puts before every text (Gemma's <bos>; nothing for SmolLM2):
    the reference, like the kit's runners, begins every fresh context with it."""
    from ..bundle.kit import devicekit

    encode = lambda text, special: tok(text, add_special_tokens=special)["input_ids"]  # noqa: E731
    return devicekit().leading_ids(encode)


model_key = content_key  # the reference, exports and evaluations are keyed by content


def reference(model_dir: Path, facts: ModelFacts, cache_dir: Path, trust_remote_code=False):
    """The reference for model_dir, from cache_dir when it was computed before."""
    dtype = reference_dtype(facts.num_parameters)
    path = Path(cache_dir) / "references" / f"{model_key(model_dir)}{key_suffix(dtype)}.npz"
    # builds running side by side compute it once: the others wait, then read it
    with locked(path.with_suffix(".lock")):
        if path.exists():
            ref = _load(path)
            if ref is not None:
                return ref
        ref = _compute(Path(model_dir), facts, trust_remote_code, dtype)
        data = io.BytesIO()
        _save(ref, data)
        write_atomic(path, data.getvalue())
    return ref


def _compute(model_dir: Path, facts: ModelFacts, trust_remote_code: bool, dtype: str):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    probes = {t: tok(t, add_special_tokens=False)["input_ids"] for t in TOKENIZER_PROBES}
    empty = np.zeros((0,), dtype=np.float32)
    with torch.inference_mode():
        if facts.kind == "encoder":
            model = load(model_dir, dtype, trust_remote_code, encoder=True)
            batch = tok(list(ENCODER_SENTENCES), padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            emb = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
            sentences = list(ENCODER_SENTENCES)
            return Reference(probes, [], [], [], empty, empty, sentences, emb, [], dtype)
        model = load(model_dir, dtype, trust_remote_code, attn_implementation="eager")

        start = start_ids(tok)

        def run(ids: list[int]) -> np.ndarray:
            logits = model(torch.tensor([start + list(ids)])).logits[0, len(start) :]
            return logits.float().numpy()

        inputs = [tok(t, add_special_tokens=False)["input_ids"] for t in LOGIT_INPUTS]
        logits = [run(ids) for ids in inputs]
        agreement_ids = tok(AGREEMENT_TEXT, add_special_tokens=False)["input_ids"]
        agreement_logits = run(agreement_ids)
    return Reference(
        probes,
        inputs,
        logits,
        agreement_ids,
        agreement_logits.argmax(-1),
        agreement_logits.astype(np.float16),
        [],
        empty,
        start,
        dtype,
    )


def _save(ref: Reference, path) -> None:
    meta = {
        "probes": ref.probes,
        "inputs": ref.inputs,
        "agreement_ids": ref.agreement_ids,
        "sentences": ref.sentences,
        "start": ref.start,
        "dtype": ref.dtype,
    }
    arrays = {f"logits_{i}": a for i, a in enumerate(ref.logits)}
    np.savez(
        path,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        agreement_top1=ref.agreement_top1,
        agreement_logits=ref.agreement_logits,
        embeddings=ref.embeddings,
        **arrays,
    )


def _load(path: Path) -> Reference | None:
    """The cached reference, or None when it predates a field (it is computed again)."""
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        if "start" not in meta:
            return None
        logits = [data[f"logits_{i}"] for i in range(len(meta["inputs"]))]
        return Reference(
            probes=meta["probes"],
            inputs=meta["inputs"],
            logits=logits,
            agreement_ids=meta["agreement_ids"],
            agreement_top1=data["agreement_top1"],
            agreement_logits=data["agreement_logits"],
            sentences=meta["sentences"],
            embeddings=data["embeddings"],
            start=meta["start"],
            dtype=meta.get("dtype", "float32"),
        )
