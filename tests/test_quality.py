"""Quality measured in the runtime: perplexity, KL, retention, and the gate in build."""

import numpy as np
import pytest

from edgepack.errors import EdgepackError
from edgepack.kit import load_runner
from edgepack.quality import chunks, eval_text, measure, perplexity, reference_eval, scored
from tests.conftest import PROFILES, run_cli


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


@pytest.mark.integration
def test_gate_refuses_a_candidate_below_the_floor(tmp_path):
    text = (PROFILES / "edge-4gb.toml").read_text()
    strict = tmp_path / "strict.toml"
    strict.write_text(
        text.replace('name = "edge-4gb"', 'name = "strict"').replace(
            "min_quality = 0.85 ", "min_quality = 0.999 "
        )
    )
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
    assert "next worth trying: --format gguf --precision" in line
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("."))
