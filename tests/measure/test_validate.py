"""Validation's float path on synthetic logits: no backend, no model."""

import numpy as np
import pytest

from edgepack.errors import ValidationError
from edgepack.measure.reference import Reference
from edgepack.measure.validate import validate

INPUTS = [[1, 2, 3], [4, 5, 6, 7]]


class Runner:
    """Returns the reference's logits, plus `shift` x the token index."""

    kind, runtime, start = "decoder", "fake", []

    def __init__(self, ref: Reference, shift: float = 0.0):
        self.by_input = {tuple(i): x for i, x in zip(ref.inputs, ref.logits, strict=True)}
        self.shift = shift

    def tokenize(self, text):
        return [1, 2]

    def logits(self, ids):
        return self.by_input[tuple(ids)] + self.shift * np.arange(8, dtype=np.float32)


def reference(spread: float) -> Reference:
    rng = np.random.default_rng(0)
    return Reference(
        probes={"a b": [1, 2]},
        inputs=INPUTS,
        logits=[(rng.standard_normal((len(i), 8)) * spread).astype(np.float32) for i in INPUTS],
        agreement_ids=[],
        agreement_top1=np.zeros(0),
        agreement_logits=np.zeros((0, 8)),
        sentences=[],
        embeddings=np.zeros((0, 0)),
    )


def test_a_flat_model_with_no_confident_position_is_judged_by_its_logits_alone():
    # a random tiny model's logits lie within 0.5 of each other: no position is confident
    ref = reference(0.1)
    figures = validate(Runner(ref), ref, bits=32)
    assert figures["confident_positions"] == 0
    assert figures["top1_agreement_confident"] is None
    with pytest.raises(ValidationError, match="differ by"):
        validate(Runner(ref, shift=0.01), ref, bits=32)


def test_a_confident_model_is_judged_by_its_top1_tokens_too():
    ref = reference(10.0)
    figures = validate(Runner(ref), ref, bits=16)
    assert figures["confident_positions"] > 0 and figures["top1_agreement_confident"] == 1.0
    with pytest.raises(ValidationError, match="top-1 agreement"):
        validate(Runner(ref, shift=10.0), ref, bits=16)


def quantized_reference(spread: float, positions: int = 64, vocab: int = 32) -> Reference:
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((positions, vocab)) * spread).astype(np.float32)
    return Reference(
        probes={"a b": [1, 2]},
        inputs=[],
        logits=[],
        agreement_ids=list(range(positions)),
        agreement_top1=logits.argmax(-1),
        agreement_logits=logits,
        sentences=[],
        embeddings=np.zeros((0, 0)),
    )


class QuantizedRunner(Runner):
    """The reference's agreement logits plus `noise` x its spread (seeded), or another's."""

    def __init__(self, ref: Reference, noise: float = 0.0, wrong: bool = False):
        rng = np.random.default_rng(2)
        x = ref.agreement_logits
        self.out = np.roll(x, 1, axis=0) if wrong else x + noise * x.std() * rng.standard_normal(
            x.shape
        ).astype(np.float32)

    def logits(self, ids):
        return self.out


def test_a_flat_quantized_model_is_judged_by_its_logits_and_says_so():
    ref = quantized_reference(0.1)  # no confident position
    q8 = validate(QuantizedRunner(ref, noise=0.02), ref, bits=8)
    assert q8["confident_positions"] == 0 and q8["top1_agreement_confident"] is None
    assert q8["logits_relative_error"] == pytest.approx(0.02, rel=0.1)
    assert q8["logits_relative_error_ceiling"] == 0.15
    assert validate(QuantizedRunner(ref, noise=0.3), ref, bits=4)["logits_relative_error"] < 0.6
    with pytest.raises(ValidationError) as broken:
        validate(QuantizedRunner(ref, wrong=True), ref, bits=4)
    message = str(broken.value)
    assert "of its spread (RMS) > 0.6 for 4-bit weights" in message
    assert "confident at no position of 64" in message and "top-1 agreement" not in message


def test_a_confident_quantized_model_is_still_judged_by_top1():
    ref = quantized_reference(10.0)
    figures = validate(QuantizedRunner(ref), ref, bits=8)
    assert figures["confident_positions"] > 0 and figures["top1_agreement_confident"] == 1.0
    with pytest.raises(ValidationError, match="top-1 agreement"):
        validate(QuantizedRunner(ref, wrong=True), ref, bits=8)


def test_a_float_export_is_held_to_the_bf16_tolerance_against_a_bf16_reference():
    # an fp16 export 1.5 logits from the reference: too far from an fp32 reference, within
    # what bfloat16 itself moves logits (edgepack.measure.reference_model)
    ref = reference(0.1)
    shifted = Runner(ref, shift=1.5 / 7)
    with pytest.raises(ValidationError, match="differ by"):
        validate(shifted, ref, bits=16)
    ref.dtype = "bfloat16"
    figures = validate(shifted, ref, bits=16)
    assert figures["logits_tolerance"] == 2.0 and figures["reference_dtype"] == "bfloat16"
    with pytest.raises(ValidationError, match="differ by"):
        validate(Runner(ref, shift=2.5 / 7), ref, bits=16)
