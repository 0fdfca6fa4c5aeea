"""Quality measured in the runtime: perplexity, KL, retention, and the gate in build."""

import json

import numpy as np
import pytest

from edgepack.errors import EdgepackError
from edgepack.kit import load_runner
from edgepack.quality import chunks, eval_text, measure, perplexity, reference_eval, scored
from tests.conftest import PROFILES, run_cli

# between the default model's measured retention of gguf q4_0 and of q4_k_m (its mixed variant)
MIXED_FLOOR = 0.9  # measured: q4_0 0.827, q4_k_m 0.952


def test_chunks_score_the_second_half():
    assert chunks(1200, 512) == [(0, 512), (512, 1024)]
    assert chunks(300, 512) == [(0, 300)]
    window = scored(0, 512)
    assert (window.start, window.stop) == (255, 511)  # predicts tokens 256..511
    with pytest.raises(EdgepackError, match="only 5 tokens"):
        chunks(5)


def test_perplexity_is_exp_mean_nll():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 11))
    targets = rng.integers(0, 11, size=7)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = np.exp(-np.log(probs[np.arange(7), targets]).mean())
    assert perplexity(logits, targets) == pytest.approx(expected, rel=1e-9)


def test_eval_text_errors(tmp_path):
    name, text = eval_text()
    assert name == "built-in" and len(text.split()) > 1000
    with pytest.raises(EdgepackError, match="cannot read"):
        eval_text(tmp_path / "missing.txt")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(EdgepackError, match="at least 200"):
        eval_text(short)


class Recording:
    """A runner that keeps every logits matrix it returns."""

    def __init__(self, runner):
        self.runner, self.calls = runner, []

    def logits(self, ids):
        out = self.runner.logits(ids)
        self.calls.append((list(ids), np.array(out)))
        return out


@pytest.mark.integration
def test_runtime_perplexity_equals_an_independent_computation(default_model, exports):
    import torch

    text = " ".join(eval_text()[1].split()[:260])  # a short text: one chunk
    ref = reference_eval(default_model, "short", text)
    runner = Recording(load_runner("llama.cpp", exports.get(default_model, "gguf", "q8_0").path))
    quality = measure(runner, ref)
    # independently: torch's cross-entropy on the very logits the runtime returned
    losses = []
    for (start, end), (ids, logits) in zip(ref.chunks, runner.calls, strict=True):
        assert ids == ref.ids[start:end]
        w = scored(start, end)
        target = torch.tensor(ids[w.start + 1 : w.stop + 1])
        losses.append(
            torch.nn.functional.cross_entropy(
                torch.tensor(logits[w], dtype=torch.float64), target, reduction="none"
            )
        )
    independent = float(torch.exp(torch.cat(losses).mean()))
    assert quality.perplexity == pytest.approx(independent, rel=1e-9)
    assert quality.retention == pytest.approx(min(1.0, ref.perplexity / independent))
    assert 0.9 < quality.retention <= 1.0
    assert quality.kl_divergence_mean >= 0


def floor_profile(tmp_path, name: str, floor: float):
    """edge-4gb with another quality floor."""
    text = (PROFILES / "edge-4gb.toml").read_text()
    path = tmp_path / f"{name}.toml"
    path.write_text(
        text.replace('name = "edge-4gb"', f'name = "{name}"').replace(
            "min_quality = 0.85 ", f"min_quality = {floor} "
        )
    )
    return path


@pytest.mark.integration
def test_gate_refuses_a_candidate_below_the_floor(tmp_path):
    strict = floor_profile(tmp_path, "strict", 0.999)
    out = tmp_path / "out"
    result = run_cli(
        "build",
        "--target",
        str(strict),
        "--format",
        "gguf",
        "--precision",
        "q4_0",
        "--out",
        str(out),
    )
    assert result.returncode == 1, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert "gguf q4_0 keeps retention" in line and "strict's floor 0.999" in line
    # before giving up, the mixed-precision variants were measured too
    assert "mixed-precision variants tried keep gguf q4_k_m 0." in line
    assert "gguf q4_k_m_mixed 0." in line
    assert "next worth trying: --format gguf --precision" in line
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("."))


@pytest.mark.integration
def test_a_4_bit_miss_falls_back_to_its_mixed_variant(tmp_path):
    profile = floor_profile(tmp_path, "between", MIXED_FLOOR)
    out = tmp_path / "out"
    result = run_cli(
        "build",
        "--target",
        str(profile),
        "--format",
        "gguf",
        "--precision",
        "q4_0",
        "--candidates",
        "1",
        "--out",
        str(out),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trying its mixed-precision variant gguf q4_k_m" in result.stderr
    (bundle,) = json.loads(result.stdout)["bundles"]
    assert (bundle["format"], bundle["precision"]) == ("gguf", "q4_k_m")
    rows = {r["precision"]: r for r in bundle["candidates_measured"]}
    assert set(rows) == {"q4_0", "q4_k_m"}
    assert rows["q4_0"]["measured"]["retention"] < MIXED_FLOOR and not rows["q4_0"]["accepted"]
    assert rows["q4_k_m"]["fallback_for"] == "gguf q4_0" and rows["q4_k_m"]["chosen"]
    assert rows["q4_k_m"]["measured"]["retention"] >= MIXED_FLOOR


@pytest.mark.parametrize(
    "words, message",
    [(0, "has 0 words; give at least 300 words"), (40, "has 40 words; give at least 300")],
)
def test_short_calibration_text_is_refused_before_any_work(tmp_path, words, message):
    text = tmp_path / "cal.txt"
    text.write_text(" ".join(["word"] * words))
    out = tmp_path / "out"
    result = run_cli("build", "--target", "edge-4gb", "--calibration", str(text), "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: calibration text") and message in line
    assert not out.exists()
