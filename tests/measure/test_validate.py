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
