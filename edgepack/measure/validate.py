"""Validation after every export: typed, numeric, and fatal on failure.

Every check runs, every mismatch is collected, and a failure raises ValidationError with the
whole table (the artifact is then not kept). The measured figures are returned for the manifest.

- tokenization parity with the source tokenizer on varied strings;
- fp32/fp16 artifacts: next-token logits within LOGIT_TOLERANCE of the PyTorch reference
  on inputs of different lengths, and the same top-1 token wherever the reference is confident;
- quantized artifacts: top-1 next-token agreement with the reference on a built-in text of
  ~230 tokens above AGREEMENT_FLOOR for their bit width, counted at the positions where the
  reference is confident (its top-1 leads the runner-up by more than CONFIDENT_MARGIN logits).
  A small model has many near-ties (the default model's answer to "What is the capital of
  France?" starts with "The" 25.33 vs "L" 25.24): flipping those says nothing about a broken
  export, while a broken export also loses the confident positions. Plain agreement and the mean
  KL divergence to the reference are recorded as well. Where the reference has no confident
  position (a flat model: a random one with a narrow initialisation), top-1 says nothing and
  the logits judge, as for float artifacts: the RMS of the logit difference against the
  reference's spread (RMS of its logits about each position's mean) must stay under
  RELATIVE_ERROR_CEILING for the bit width;
- encoders: cosine similarity of sentence embeddings above COSINE_FLOOR.
"""

from __future__ import annotations

import numpy as np

from ..errors import ValidationError
from .reference import Reference

# Max |logit - reference logit|. fp32 runtimes reorder sums (~1e-4 relative); fp16 weights and
# fp16 accumulation in some kernels move logits of magnitude ~20 by up to a few tenths.
LOGIT_TOLERANCE = {32: 0.05, 16: 1.0}
# against a bfloat16 reference (a large model's, edgepack.measure.reference_model): bf16 itself
# moved the default model's logits by up to 1.20 from fp32's
BF16_LOGIT_TOLERANCE = 2.0
CONFIDENT_MARGIN = 1.0  # logits between the reference's top-1 and its runner-up
FLOAT_TOP1_FLOOR = 0.99  # fp32/fp16: confident positions with the reference's top-1 token
# Quantized: confident positions of AGREEMENT_TEXT with the reference's top-1 token. Measured on
# the default model (84 confident positions of 227): q8_0 1.0, q6_k 1.0, q5_k_m 0.94,
# q4_k_m 1.0, q4_0 0.86; a weight scaled by 4 falls far below.
AGREEMENT_FLOOR = {8: 0.95, 6: 0.90, 5: 0.85, 4: 0.80}
COSINE_FLOOR = {32: 0.999, 16: 0.995, 8: 0.97, 4: 0.90}
# Quantized, no confident position: RMS(logits - reference) / the reference's spread. Measured on
# tiny random 2-layer Llamas (tests/tiny.py) over the 227 positions: initialised at 0.02 (flat,
# no confident position) GGUF q8_0, OpenVINO int8 and ONNX int8 0.010-0.011, q4_k_m 0.050,
# q4_0 0.114, OpenVINO int4 0.069, ONNX int4 0.114; initialised at 0.1, 8-bit 0.026-0.030 and
# 4-bit 0.135-0.324. Logits of the wrong positions score 1.14-1.33, all-zero logits 1.0.
RELATIVE_ERROR_CEILING = {8: 0.15, 6: 0.25, 5: 0.35, 4: 0.6}


def validate(runner, ref: Reference, bits: int) -> dict:
    """Check a loaded runner against the reference; return the measured figures or raise."""
    problems: list[str] = []
    figures: dict = {}
    mismatched = []
    for text, expected in ref.probes.items():
        got = runner.tokenize(text)
        if list(got) != list(expected):
            mismatched.append(text)
            problems.append(f"tokenization of {text[:40]!r}: {list(got)[:12]} != {expected[:12]}")
    figures["tokenizer_parity"] = f"{len(ref.probes) - len(mismatched)}/{len(ref.probes)}"
    figures["reference_dtype"] = ref.dtype
    if runner.kind == "decoder" and list(runner.start) != list(ref.start):
        problems.append(
            f"{runner.runtime} begins a text with {list(runner.start)}, the source tokenizer "
            f"with {list(ref.start)}"
        )

    if runner.kind == "encoder":
        got = runner.embed(list(ref.sentences))
        cos = _cosine(got, ref.embeddings)
        figures["embedding_cosine_min"] = round(float(cos.min()), 6)
        floor = COSINE_FLOOR[min(COSINE_FLOOR, key=lambda b: abs(b - bits))]
        figures["embedding_cosine_floor"] = floor
        if cos.min() < floor:
            problems.append(f"embedding cosine similarity {cos.min():.4f} < {floor}")
    elif bits >= 16:
        tol = LOGIT_TOLERANCE[32 if bits >= 32 else 16]
        if ref.dtype != "float32":
            tol = max(tol, BF16_LOGIT_TOLERANCE)
        worst, agree, confident = 0.0, 0, 0
        for ids, expected in zip(ref.inputs, ref.logits, strict=True):
            got = np.asarray(runner.logits(ids), dtype=np.float32)
            if got.shape != expected.shape:
                problems.append(f"logits shape {got.shape} != reference {expected.shape}")
                continue
            diff = float(np.abs(got - expected).max())
            worst = max(worst, diff)
            mask = confident_positions(expected)
            agree += int((got.argmax(-1) == expected.argmax(-1))[mask].sum())
            confident += int(mask.sum())
            if diff > tol:
                problems.append(f"logits of a {len(ids)}-token input differ by {diff:.4f} > {tol}")
        # no confident position (a flat, random model): the logits' tolerance alone judges
        top1 = agree / confident if confident else None
        figures |= {
            "logits_max_abs_diff": round(worst, 5),
            "logits_tolerance": tol,
            "top1_agreement_confident": round(top1, 4) if top1 is not None else None,
            "confident_positions": confident,
        }
        if top1 is not None and top1 < FLOAT_TOP1_FLOOR:
            problems.append(f"top-1 agreement {top1:.3f} < {FLOAT_TOP1_FLOOR} where confident")
    else:
        floor = AGREEMENT_FLOOR[min(AGREEMENT_FLOOR, key=lambda b: abs(b - bits))]
        expected = ref.agreement_logits.astype(np.float32)  # stored in float16
        got = np.asarray(runner.logits(ref.agreement_ids), dtype=np.float32)
        same = got.argmax(-1) == ref.agreement_top1
        mask = confident_positions(expected)
        top1 = float(same[mask].mean()) if mask.any() else None
        spread = expected - expected.mean(-1, keepdims=True)
        relative = float(np.sqrt(((got - expected) ** 2).mean() / max((spread**2).mean(), 1e-12)))
        ceiling = RELATIVE_ERROR_CEILING[min(RELATIVE_ERROR_CEILING, key=lambda b: abs(b - bits))]
        figures |= {
            "top1_agreement_confident": round(top1, 4) if top1 is not None else None,
            "top1_floor": floor,
            "confident_positions": int(mask.sum()),
            "top1_agreement": round(float(same.mean()), 4),
            "positions": len(ref.agreement_ids),
            "kl_divergence_mean": round(kl_divergence(expected, got), 5),
            "logits_relative_error": round(relative, 4),
        }
        if top1 is not None and top1 < floor:
            problems.append(
                f"top-1 agreement {top1:.3f} < {floor} for {bits}-bit weights at the "
                f"{int(mask.sum())} positions where the reference is confident"
            )
        elif top1 is None:  # a flat model: the logits judge
            figures["logits_relative_error_ceiling"] = ceiling
            if relative > ceiling:
                problems.append(
                    f"logits differ from the reference by {relative:.3f} of its spread (RMS) > "
                    f"{ceiling} for {bits}-bit weights; the reference is confident at no "
                    f"position of {len(ref.agreement_ids)}, so its logits judge, not top-1"
                )
    if problems:
        raise ValidationError(
            "validation failed: " + "; ".join(problems) + " (the artifact was not kept)"
        )
    return figures


def confident_positions(logits: np.ndarray) -> np.ndarray:
    """Positions where the top-1 logit leads the runner-up by more than CONFIDENT_MARGIN."""
    top2 = np.partition(logits, -2, axis=-1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) > CONFIDENT_MARGIN


def kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean KL(reference || candidate) of the next-token distributions, in nats."""
    p = _log_softmax(reference.astype(np.float64))
    q = _log_softmax(candidate.astype(np.float64))
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)
