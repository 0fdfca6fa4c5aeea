"""Quality measured in the runtime: perplexity, KL, retention, and the gate in build."""

import hashlib
import tomllib
from importlib import resources

import numpy as np
import pytest

from edgepack.bundle.kit import load_runner
from edgepack.errors import EdgepackError
from edgepack.measure import estimators as est
from edgepack.measure import quality as q
from edgepack.measure.quality import chunks, eval_text, measure, reference_eval, scored
from tests.conftest import ROOT


def test_chunks_score_the_second_half():
    assert chunks(1200, 512) == [(0, 512), (512, 1024)]
    assert chunks(300, 512) == [(0, 300)]
    window = scored(0, 512)
    assert (window.start, window.stop) == (255, 511)  # predicts tokens 256..511
    with pytest.raises(EdgepackError, match="only 5 tokens"):
        chunks(5)


def test_log_softmax_is_exact_in_float64():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 11)).astype(np.float32)
    probs = np.exp(logits.astype(np.float64))
    expected = np.log(probs / probs.sum(-1, keepdims=True))
    assert est.log_softmax(logits) == pytest.approx(expected, rel=1e-12)
    shifted = logits.astype(np.float64) + 1000  # exp(1000) overflows: the max is subtracted
    assert est.log_softmax(shifted) == pytest.approx(expected, rel=1e-9)


def chunk_sums(per_token: np.ndarray) -> np.ndarray:
    """[chunks, tokens] per-token NLL -> per-chunk sums."""
    return per_token.sum(1)


def synthetic(n_chunks: int, seed: int = 1, tokens: int = 256):
    """Per-token reference NLL whose difficulty varies by chunk, and a candidate that loses
    unevenly: more on some chunks than on others."""
    rng = np.random.default_rng(seed)
    ref = rng.gamma(2.0, 1.5, size=(n_chunks, tokens)) * rng.uniform(0.5, 2, size=(n_chunks, 1))
    loss = rng.normal(0.1, 0.05, size=(n_chunks, 1)) + rng.normal(0, 0.3, size=(n_chunks, tokens))
    return ref, ref + loss, np.full(n_chunks, tokens)


def test_bootstrap_of_an_identical_candidate_is_one():
    ref, _, tokens = synthetic(16)
    sums = chunk_sums(ref)
    assert est.retention_interval(sums, sums, tokens) == (1.0, 1.0)
    assert est.retention_point(sums, sums, tokens) == 1.0


def test_bootstrap_interval_holds_the_point_estimate():
    ref, cand, tokens = synthetic(16)
    point = est.retention_point(chunk_sums(ref), chunk_sums(cand), tokens)
    low, high = est.retention_interval(chunk_sums(ref), chunk_sums(cand), tokens)
    assert point == pytest.approx(np.exp(ref.mean() - cand.mean()), rel=1e-12)
    assert low < point < high < 1.0
    assert point == pytest.approx(0.905, abs=0.03)  # exp(-0.1): what the candidate loses


def test_bootstrap_narrows_as_chunks_are_added():
    ref, cand, tokens = synthetic(128)
    widths = []
    for n in (8, 32, 128):
        low, high = est.retention_interval(chunk_sums(ref[:n]), chunk_sums(cand[:n]), tokens[:n])
        widths.append(high - low)
    assert widths[0] > 1.5 * widths[1] > 1.5 * 1.5 * widths[2] > 0


def test_bootstrap_is_deterministic_for_a_seed():
    ref, cand, tokens = synthetic(16)
    a, b = chunk_sums(ref), chunk_sums(cand)
    assert est.retention_interval(a, b, tokens) == est.retention_interval(a, b, tokens)
    seven = est.retention_interval(a, b, tokens, seed=7)
    assert seven == est.retention_interval(a, b, tokens, seed=7)
    assert est.retention_interval(a, b, tokens, seed=7) != est.retention_interval(a, b, tokens)


def test_bootstrap_is_paired():
    """A constant loss per token leaves no doubt, however unlike the chunks are."""
    ref, _, tokens = synthetic(16)
    low, high = est.retention_interval(chunk_sums(ref), chunk_sums(ref + 0.05), tokens)
    assert high - low == pytest.approx(0.0, abs=1e-12)
    assert low == pytest.approx(np.exp(-0.05), rel=1e-12)
    # unpaired, the chunks' own difficulty would have made the interval wide
    rng = np.random.default_rng(0)
    shuffled = chunk_sums(ref + 0.05)[rng.permutation(16)]
    low, high = est.retention_interval(chunk_sums(ref), shuffled, tokens)
    assert high - low > 0.1


class Logits:
    """A runtime stand-in that returns fixed logits for each chunk's ids."""

    def __init__(self, table: dict):
        self.table = table

    def logits(self, ids):
        return self.table[tuple(ids)]


def synthetic_reference(n_chunks=3, vocab=50, k=8, seed=0, size=32):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=n_chunks * size).tolist()
    parts = chunks(len(ids), size)
    table, nll, tops = {}, [], []
    for start, end in parts:
        logits = rng.normal(0, 3, size=(end - start, vocab)).astype(np.float32)
        table[tuple(ids[start:end])] = logits
        w = scored(start, end)
        logp = est.log_softmax(logits[w])
        targets = np.asarray(ids[start:end])[w.start + 1 : w.stop + 1]
        nll.append(-logp[np.arange(len(targets)), targets])
        top = est.top_k(logp, k)
        tops.append(top + est.tail_sample(logp, top[0], 16, rng))
    nll = np.concatenate(nll)
    ref = q.EvalReference(
        "synthetic",
        "0" * 64,
        ids,
        parts,
        nll,
        *(np.concatenate([t[i] for t in tops]) for i in range(5)),
        perplexity=float(np.exp(nll.mean())),
    )
    return ref, table


def test_a_runner_with_the_references_logits_is_lossless():
    ref, table = synthetic_reference()
    quality = q.measure(Logits(table), ref)
    assert (quality.retention, quality.retention_low, quality.retention_high) == (1.0, 1.0, 1.0)
    assert quality.perplexity == pytest.approx(ref.perplexity, rel=1e-9)
    assert quality.kl_divergence_mean == pytest.approx(0.0, abs=1e-6)
    assert quality.top1_agreement == 1.0
    assert (quality.eval_tokens, quality.eval_chunks, quality.kl_top_k) == (48, 3, 8)
    assert quality.kl_tail_samples == 16
    keys = {"retention", "retention_low", "retention_high", "eval_tokens", "eval_chunks"}
    assert keys | {"eval_text", "eval_text_sha256"} <= set(quality.to_dict())


def test_scores_of_a_noisy_runner_and_their_prefixes():
    ref, table = synthetic_reference(n_chunks=6)
    rng = np.random.default_rng(3)
    noisy = {
        key: v + rng.normal(0, 1.0, size=v.shape).astype(np.float32) for key, v in table.items()
    }
    scores = q.score_chunks(Logits(noisy), ref)
    whole, first = q.summarize(scores, ref), q.summarize(scores, ref, upto=2)
    assert whole.retention < 1 and whole.retention_low <= whole.retention <= whole.retention_high
    assert whole.kl_divergence_mean > 0.05 and 0 < whole.top1_agreement < 1
    assert (first.eval_tokens, first.eval_chunks) == (32, 2)
    assert whole.reference_perplexity == pytest.approx(ref.perplexity, rel=1e-9)
    # the first two chunks alone, measured afresh, give the prefix's figures
    part = q.EvalReference(
        ref.name,
        ref.sha256,
        ref.ids[:64],
        ref.chunks[:2],
        *(getattr(ref, a)[:32] for a in q._ARRAYS),
        perplexity=float(np.exp(ref.nll[:32].mean())),
    )
    assert q.measure(Logits(noisy), part).to_dict() == first.to_dict()


def test_a_smaller_size_is_the_first_chunks_of_a_larger_reference():
    ref, table = synthetic_reference(n_chunks=5, size=512)
    small = q.prefix(ref, 1024)
    assert small.chunks == ref.chunks[:4] and small.scored_tokens == 1024
    assert small.perplexity == pytest.approx(float(np.exp(ref.nll[:1024].mean())), rel=1e-12)
    scores = q.score_chunks(Logits(table), ref)
    assert q.measure(Logits(table), small).to_dict() == q.summarize(scores, ref, 4).to_dict()
    assert q.prefix(ref, 300).chunks == ref.chunks[:2]  # whole chunks: 300 scored need two
    assert q.prefix(ref, 10**6).chunks == ref.chunks


class Artifact(Logits):
    """A runner over a model directory, as the kit's runners are."""

    def __init__(self, table, model_dir, version="1.0"):
        super().__init__(table)
        self.model_dir, self._version, self.calls = str(model_dir), version, 0

    def version(self):
        return self._version

    def logits(self, ids):
        self.calls += 1
        return super().logits(ids)


def test_a_measurement_is_cached_by_the_artifacts_content_and_runtime(tmp_path):
    ref, table = synthetic_reference()
    ref.cache = (tmp_path / "refs", "synthetic-ref")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x01" * 1000)
    first = Artifact(table, model)
    quality = q.measure(first, ref)
    assert first.calls == 3 and len(list((tmp_path / "refs" / "measured").iterdir())) == 1
    again = Artifact(table, model)
    assert q.measure(again, ref) == quality and again.calls == 0
    assert q.measure(Artifact(table, model, version="1.1"), ref) == quality  # measured anew
    (model / "weights.bin").write_bytes(b"\x01" * 999 + b"\x02")  # same size, other bytes
    changed = Artifact(table, model)
    q.measure(changed, ref)
    assert changed.calls == 3 and len(list((tmp_path / "refs" / "measured").iterdir())) == 3
    ref.cache = None  # a reference that is not cached measures every time
    plain = Artifact(table, model)
    q.measure(plain, ref)
    assert plain.calls == 3


def test_top_k_kl_is_exact_with_every_token_and_a_lower_bound_with_fewer():
    rng = np.random.default_rng(5)
    logp = est.log_softmax(rng.normal(0, 2, size=(20, 300)))
    logq = est.log_softmax(np.log(np.exp(logp) + 0.002 * rng.random((20, 300))))
    exact = (np.exp(logp) * (logp - logq)).sum(-1)
    full = est.kl_estimate(*est.top_k(logp, 300), logq)
    assert full == pytest.approx(exact, rel=1e-5)
    previous = np.zeros(20)
    for k in (5, 50, 200):
        approx = est.kl_estimate(*est.top_k(logp, k), logq)
        assert np.all(approx <= exact + 1e-9) and np.all(approx >= previous - 1e-9)
        previous = approx
    ids, vals, rest = est.top_k(logp, 5)
    assert np.all(np.diff(vals, axis=1) <= 0) and np.all(ids[:, 0] == logp.argmax(-1))
    assert np.exp(rest) == pytest.approx(1 - np.exp(vals.astype(np.float64)).sum(-1), abs=1e-6)


def test_tail_samples_make_the_kl_estimate_unbiased():
    """A flat reference (much mass in the tail) whose candidate differs in the tail too: the
    one-bin tail misses most of the KL, the sampled tail recovers it."""
    rng = np.random.default_rng(6)
    logp = est.log_softmax(rng.normal(0, 1, size=(400, 2000)))
    logq = est.log_softmax(est.log_softmax(logp) + rng.normal(0, 0.3, size=logp.shape))
    exact = (np.exp(logp) * (logp - logq)).sum(-1).mean()
    top = est.top_k(logp, 32)
    one_bin = est.kl_estimate(*top, logq).mean()
    sampled = est.kl_estimate(*top, logq, *est.tail_sample(logp, top[0], 64, rng)).mean()
    assert one_bin < 0.2 * exact
    assert sampled == pytest.approx(exact, rel=0.02)
    ids, _ = est.tail_sample(logp, top[0], 64, rng)
    assert not any(np.isin(i, t).any() for i, t in zip(ids, top[0], strict=True))


def test_first_tokens_tokenizes_a_prefix_only():
    text = "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(5000))
    seen = []

    def encode(s):
        seen.append(len(s))
        return s.split()

    assert q.first_tokens(encode, text, 700) == text.split()[:700]
    assert max(seen) < len(text) / 5
    assert q.first_tokens(encode, text, 10**6) == text.split()
    assert est.tokens_for(4096) == 16 * 512 and est.tokens_for(300) == 2 * 512


WIKITEXT_SHA256 = "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"


def test_the_default_text_is_wikitext_2_test_and_the_project_text_stays():
    name, text = eval_text()
    assert name == "wikitext-2-test" and len(text.encode()) == 1_256_449
    assert hashlib.sha256(text.encode()).hexdigest() == WIKITEXT_SHA256
    assert text.startswith(" \n = Robert <unk> = \n")
    name, text = eval_text(builtin="project")
    assert name == "built-in" and len(text.split()) > 1000 and "Robert <unk>" not in text
    with pytest.raises(ValueError, match="unknown built-in text 'wiki'"):
        eval_text(builtin="wiki")


def test_wikitext_ships_with_its_licence():
    folder = resources.files("edgepack").joinpath("data/wikitext-2")
    names = {"test.txt", "SOURCE.md", "LICENSE"}
    assert names <= {p.name for p in folder.iterdir()}
    licence = folder.joinpath("LICENSE").read_text("utf-8")
    assert "Creative Commons Attribution-ShareAlike 3.0" in licence and "CC BY-SA 3.0" in licence
    for author in ("Stephen Merity", "Caiming Xiong", "James Bradbury", "Richard Socher"):
        assert author in licence
    assert WIKITEXT_SHA256 in folder.joinpath("SOURCE.md").read_text("utf-8")
    # and the package data patterns put all three into the distribution
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["edgepack"]
    shipped = {
        p.relative_to(ROOT / "edgepack")
        for pat in patterns
        for p in (ROOT / "edgepack").glob(pat)
        if p.is_file()
    }
    assert {f"data/wikitext-2/{n}" for n in names} <= {str(p) for p in shipped}
    assert "data/eval.txt" in {str(p) for p in shipped}


def test_eval_data_replaces_the_default(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("my words " * 150)
    assert eval_text(mine) == ("mine.txt", "my words " * 150)
    assert eval_text(mine, builtin="project")[0] == "mine.txt"


def test_eval_text_errors(tmp_path):
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

    text = " ".join(eval_text()[1].split()[:1000])  # two chunks of WikiText-2
    ref = reference_eval(default_model, "short", text)
    assert len(ref.chunks) == 2 and ref.scored_tokens == 2 * 256
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
    assert quality.retention_low <= quality.retention <= quality.retention_high <= 1.0
    assert quality.kl_divergence_mean >= 0
    assert (quality.eval_tokens, quality.eval_chunks) == (512, 2)


@pytest.mark.integration
def test_the_reference_keeps_the_whole_texts_tokens(default_model):
    """Tokenizing a prefix of WikiText-2 gives the ids the whole text's tokenization starts with."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model)
    name, text = eval_text()
    whole = tok(text, add_special_tokens=False)["input_ids"]
    n = est.tokens_for(q.EVAL_SCORED_TOKENS)
    assert len(whole) > 10 * n
    assert (
        q.first_tokens(lambda s: tok(s, add_special_tokens=False)["input_ids"], text, n)
        == (whole[:n])
    )
