"""The on-device kit's pure parts and the manifest's keys, without a runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepack.bundle.kit import devicekit, manifest_keys
from edgepack.bundle.manifest import Manifest

dk = devicekit()
K = manifest_keys()


def fake_tokenize(text: str) -> list[int]:
    """A word-level tokenizer: one id per word, from a stable hash."""
    return [sum(map(ord, w)) % 997 + 3 for w in text.split()]


def test_cold_prompts_have_the_length_and_differ_from_the_first_token():
    prompts = dk.cold_prompts(fake_tokenize, 6, 128)
    assert all(len(p) == 128 for p in prompts)
    assert len({p[0] for p in prompts}) == 6
    assert len({tuple(p) for p in prompts}) == 6
    assert dk.cold_prompts(fake_tokenize, 6, 128) == prompts  # deterministic


def test_default_threads_is_the_affinity():
    import os

    assert dk.default_threads() == len(os.sched_getaffinity(0))


def logits_for(golden, vocab=50, lead=3.0, ties=()):
    """Logits whose argmax at each golden step is the golden token by `lead`, or a near-tie."""
    n = len(golden["prompt_ids"]) + len(golden["tokens"])
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 0.1, (n, vocab)).astype(np.float32)
    start = len(golden["prompt_ids"]) - 1
    for step, token in enumerate(golden["tokens"]):
        rows[start + step, token] = lead
        if step in ties:
            rows[start + step, (token + 1) % vocab] = lead - 0.05
    return rows


GOLDEN = {"prompt_ids": [5, 6, 7], "tokens": [10, 11, 12, 13, 14]}


def test_golden_margins_and_a_clean_pass():
    rows = logits_for(GOLDEN, ties={2})
    margins = dk.golden_margins(rows, 3, GOLDEN["tokens"])
    assert margins[2] == pytest.approx(0.05, abs=1e-3)
    assert all(m > 2 for i, m in enumerate(margins) if i != 2)
    verdict = dk.golden_check(rows, GOLDEN | {"margins": margins})
    assert verdict["pass"] and verdict["near_ties"] == 1 and verdict["clear_steps"] == 4


def test_a_flipped_near_tie_passes_and_does_not_fail_later_steps():
    built = logits_for(GOLDEN, ties={2})
    golden = GOLDEN | {"margins": dk.golden_margins(built, 3, GOLDEN["tokens"])}
    device = built.copy()
    device[3 - 1 + 2, 12] -= 0.1  # another CPU's order: the runner-up is now on top
    assert int(np.argmax(device[4])) != 12
    verdict = dk.golden_check(device, golden)
    assert verdict["pass"], verdict


def test_a_clear_step_that_changes_fails():
    built = logits_for(GOLDEN)
    golden = GOLDEN | {"margins": dk.golden_margins(built, 3, GOLDEN["tokens"])}
    device = built.copy()
    device[3 - 1 + 1, 40] = 9.0  # a broken model: another token wins by whole logits
    verdict = dk.golden_check(device, golden)
    assert not verdict["pass"]
    assert [f["step"] for f in verdict["failed_steps"]] == [1]


def test_a_near_tie_that_falls_far_behind_fails():
    built = logits_for(GOLDEN, ties={0})
    golden = GOLDEN | {"margins": dk.golden_margins(built, 3, GOLDEN["tokens"])}
    device = built.copy()
    device[2, 10] -= dk.NEAR_TIE + 0.2
    assert not dk.golden_check(device, golden)["pass"]


def manifest_example() -> Manifest:
    return Manifest(
        edgepack_version="0.1.0",
        created="2026-12-01T00:00:00+00:00",
        bundle={"name": "m-edge", "path": "/tmp/m-edge"},
        source_model={"path": "/m"},
        target={"name": "edge", "budget": {"memory_gb": 3}},
        plan={"format": "gguf"},
        forced_by_user=False,
        artifact={"format": "gguf", "precision": "q8_0"},
        runtime={"name": "llama.cpp", "package": "llama-cpp-python", "requirements": []},
        predicted={"memory_bytes": 1},
        validation={},
        quality={"retention": 0.99},
        golden=[],
        build_host={"skipped": "--no-check"},
    )


def test_manifest_round_trips_through_json():
    m = manifest_example()
    data = json.loads(json.dumps(m.to_dict()))
    assert Manifest.from_dict(data) == m
    assert set(data) <= set(K.ALL) and set(K.REQUIRED) <= set(data)
    assert data[K.SCHEMA] == K.SCHEMA_VERSION


@pytest.mark.parametrize("change", ["unknown", "missing"])
def test_manifest_refuses_unknown_and_missing_keys(change):
    from edgepack.errors import VerificationError

    data = manifest_example().to_dict()
    if change == "unknown":
        data["surprise"] = 1
    else:
        del data[K.GOLDEN]
    with pytest.raises(VerificationError, match=change):
        Manifest.from_dict(data)


def test_check_py_reads_the_kits_keys():
    from edgepack.bundle.kit import check_module, kit_dir

    assert check_module().K is K or check_module().K.ALL == K.ALL
    source = (kit_dir() / "check.py").read_text()
    for literal in ('"manifest_sha256"', 'manifest["', "manifest.get(\""):
        assert literal not in source, f"check.py spells a manifest key itself: {literal}"
