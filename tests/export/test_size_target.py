"""GGUF size targets: the registry's bpw precisions and the allocator's greedy descent (unit),
and a bpw4.80 export of the default model that meets its size (integration)."""

import pytest

from edgepack.export import gguf_allocate as alloc
from edgepack.export.registry import FORMATS, resolve, size_target, target_bpw


def test_a_size_target_resolves_to_a_precision_of_that_size():
    _, p = resolve("gguf", "bpw4.8")
    assert p.name == "bpw4.80" and target_bpw(p.name) == 4.8
    assert p.block_bpw == p.tied_bpw == p.embed_bpw == 4.8
    assert p.calibration == "required" and p.bits == 4
    assert FORMATS["gguf"].precision("bpw6").name == "bpw6.00"
    # the prior loss falls as bits rise, between the measured mixes
    losses = [size_target("gguf", b).loss_7b for b in (4.6, 5.0, 5.5, 7.0, 8.5)]
    assert losses == sorted(losses, reverse=True)
    assert target_bpw("q4_k_m") is None


@pytest.mark.parametrize(
    "fmt, precision, message",
    [
        ("gguf", "bpw3.5", "4.6-8.5 bits per weight"),
        ("gguf", "bpw12", "4.6-8.5 bits per weight"),
        ("openvino", "bpw4.8", "has no precision"),
    ],
)
def test_an_unreachable_size_target_is_refused_in_one_line(fmt, precision, message):
    with pytest.raises(ValueError, match=message) as err:
        resolve(fmt, precision)
    assert "\n" not in str(err.value)


def _table(errors):
    """sizes and errors of a ladder where every step down halves a tensor's bytes."""
    sizes = {n: {t: 2 ** (i + 4) for i, t in enumerate(alloc.LADDER)} for n in errors}
    return sizes, errors


def test_descent_takes_the_cheapest_error_per_byte_first():
    ladder = alloc.LADDER
    flat = {t: 0.0 for t in ladder}
    errors = {
        "sensitive": {ladder[0]: 100.0, ladder[1]: 50.0, ladder[2]: 10.0, ladder[3]: 0.0},
        "robust": {ladder[0]: 1.0, ladder[1]: 0.5, ladder[2]: 0.1, ladder[3]: 0.0},
        "free": flat,
    }
    sizes, errors = _table(errors)
    full = sum(s[ladder[-1]] for s in sizes.values())  # 3 x 128
    types, total = alloc._descend(sizes, errors, full - 64)
    assert total <= full - 64
    assert types["sensitive"] == ladder[-1]  # the robust and free tensors pay first
    types, total = alloc._descend(sizes, errors, 3 * 16)
    assert set(types.values()) == {ladder[0]} and total == 48  # the floor: every tensor smallest


def test_descent_spends_a_leftover_on_the_best_step_up():
    ladder = alloc.LADDER
    errors = {
        "big": {ladder[0]: 10.0, ladder[1]: 5.0, ladder[2]: 1.0, ladder[3]: 0.0},
        "small": {ladder[0]: 8.0, ladder[1]: 1.0, ladder[2]: 0.5, ladder[3]: 0.0},
    }
    sizes = {
        "big": {ladder[0]: 100, ladder[1]: 200, ladder[2]: 400, ladder[3]: 800},
        "small": {ladder[0]: 10, ladder[1]: 20, ladder[2]: 40, ladder[3]: 80},
    }
    types, total = alloc._descend(sizes, errors, 130)
    assert total <= 130
    assert types == {"big": ladder[0], "small": ladder[1]}  # 120 bytes: the leftover bought a step


def test_overrides_match_exactly_one_tensor_each():
    import re

    rules = alloc.overrides({"blk.1.attn_q.weight": "q4_1", "token_embd.weight": "q5_1"})
    assert rules == [["^blk\\.1\\.attn_q\\.weight$", "q4_1"], ["^token_embd\\.weight$", "q5_1"]]
    assert not re.search(rules[0][0], "blk.11.attn_q.weight")


@pytest.mark.integration
def test_a_size_target_export_meets_its_size(default_model, exports, references):
    from edgepack.bundle.kit import load_runner
    from edgepack.export.base import size_figures
    from edgepack.export.support import inspect_model
    from edgepack.measure.validate import validate

    artifact = exports.get(default_model, "gguf", "bpw4.80")
    target = artifact.details["size_target"]
    assert target["met"] and 4.6 <= target["bpw"] <= 4.8
    size = size_figures(artifact.weights_bytes(), inspect_model(default_model).num_parameters)
    assert size["bits_per_weight"] <= 4.8 and size["smaller_than_fp32"] >= 0.85
    params = artifact.details["weight_type_params"]
    assert len(set(params) & set(alloc.LADDER)) >= 2  # a mix of types, not one
    types = artifact.details["weight_types"]
    assert types["token_embd.weight"] in alloc.LADDER and len(types) == 272
    assert artifact.details["calibration"]["used"]
    figures = validate(load_runner("llama.cpp", artifact.path), references(default_model), 4)
    print(f"\ngguf bpw4.80: {size}, {target}, {params}, validation {figures}")
