"""The estimators behind quality (edgepack.measure.quality): chunks and their scored positions,
log-probabilities, the reference's top-k tokens with a sampled tail, the KL estimate, and
retention with its paired bootstrap interval over chunks. Pure numpy; the reasons for each
choice are in edgepack.measure.quality's docstring.
"""

from __future__ import annotations

import numpy as np

from ..errors import EdgepackError

CHUNK_TOKENS = 512
TOP_K = 256  # reference tokens kept per scored position for KL and top-1 agreement
RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def chunks(n_tokens: int, size: int = CHUNK_TOKENS) -> list[tuple[int, int]]:
    """Non-overlapping chunks; a shorter text is one chunk."""
    if n_tokens < 2 * 8:
        raise EdgepackError(f"the evaluation text has only {n_tokens} tokens; give a longer one")
    if n_tokens <= size:
        return [(0, n_tokens)]
    return [(s, s + size) for s in range(0, n_tokens - size + 1, size)]


def scored(start: int, end: int) -> slice:
    """Positions of a chunk whose next-token prediction is scored: the second half."""
    return slice((end - start) // 2 - 1, end - start - 1)


def tokens_for(scored_tokens: int, size: int = CHUNK_TOKENS) -> int:
    """How many tokens of text give `scored_tokens` scored positions (whole chunks)."""
    per_chunk = size - 1 - (size // 2 - 1)
    return -(-scored_tokens // per_chunk) * size


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def top_k(logp: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, log-probs, log tail mass) of each row's k most likely tokens, best first."""
    k = min(k, logp.shape[1])
    ids = np.argpartition(-logp, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(logp, ids, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    ids, vals = np.take_along_axis(ids, order, 1), np.take_along_axis(vals, order, 1)
    return ids.astype(np.int32), vals.astype(np.float32), _log_rest(vals)


def _log_rest(top_logp: np.ndarray) -> np.ndarray:
    """log(1 - sum of exp(top_logp)) per row: the mass outside the kept tokens (-inf if none)."""
    rest = 1.0 - np.exp(top_logp.astype(np.float64)).sum(-1)
    with np.errstate(divide="ignore"):
        return np.log(np.clip(rest, 0.0, None))


def tail_sample(logp: np.ndarray, top_ids: np.ndarray, m: int, rng) -> tuple:
    """(ids, log-probs) of m tokens per row drawn from the row's distribution outside top_ids."""
    probs = np.exp(logp)
    np.put_along_axis(probs, top_ids.astype(np.int64), 0.0, 1)
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((len(logp), m)) * cdf[:, -1:]
    ids = np.stack([np.searchsorted(c, x, side="right") for c, x in zip(cdf, u, strict=True)])
    ids = np.minimum(ids, logp.shape[1] - 1).reshape(len(logp), m)
    return ids.astype(np.int32), np.take_along_axis(logp, ids, 1).astype(np.float32)


def kl_estimate(top_ids, top_logp, tail_logp, logq, sample_ids=None, sample_logp=None):
    """KL(reference || candidate) per row: exact over the reference's top-k tokens, plus the
    tail. With tail samples (drawn from the reference's tail), the tail's share is estimated
    without bias, p_tail * mean(log p - log q) over the samples; without, the tail is one bin,
    which gives a lower bound of the exact KL."""
    p_logp = top_logp.astype(np.float64)
    q_top = np.take_along_axis(logq, top_ids, 1)
    head = (np.exp(p_logp) * (p_logp - q_top)).sum(-1)
    p_tail = np.exp(tail_logp)
    if sample_ids is not None and sample_ids.shape[1]:
        gap = sample_logp.astype(np.float64) - np.take_along_axis(logq, sample_ids, 1)
        return head + p_tail * gap.mean(-1)
    q_tail = _log_rest(q_top)
    with np.errstate(invalid="ignore"):
        tail = np.where(p_tail > 0, p_tail * (tail_logp - np.maximum(q_tail, -700.0)), 0.0)
    return head + tail


def retention_point(ref_nll: np.ndarray, nll_sums: np.ndarray, tokens: np.ndarray) -> float:
    """Reference perplexity / candidate perplexity, capped at 1, from per-chunk NLL sums."""
    return min(1.0, float(np.exp((ref_nll.sum() - nll_sums.sum()) / tokens.sum())))


def retention_interval(ref_nll, nll_sums, tokens, resamples=RESAMPLES, seed=SEED, level=LEVEL):
    """Paired percentile bootstrap of retention over chunks, from per-chunk sums of the
    reference's and the candidate's NLL and the chunks' scored-token counts: (low, high)."""
    gap = np.asarray(ref_nll, np.float64) - np.asarray(nll_sums, np.float64)
    tokens = np.asarray(tokens, np.float64)
    pick = np.random.default_rng(seed).integers(0, len(tokens), size=(resamples, len(tokens)))
    ratios = np.minimum(1.0, np.exp(gap[pick].sum(1) / tokens[pick].sum(1)))
    low, high = np.quantile(ratios, [(1.0 - level) / 2, (1.0 + level) / 2])
    return float(low), float(high)
