"""A smaller KV-cache type as a plan dimension: the runner's settings, and its measured effect.

The planner offers a runtime's smaller KV-cache type (llama.cpp's q8_0 K and V, with flash
attention) only for a candidate that misses memory with the default type and fits with the
smaller one. The build then measures what it costs where it matters, at the target's context:
one window of the evaluation text as long as the profile's context (or as the text and
LOGITS_BYTES allow),
run by the same artifact with the default cache and with the smaller one. On the second half
of the window (every position there has at least half the context behind it) it reports the
mean KL divergence of the smaller cache's next-token distribution from the default's and their
top-1 agreement. The retention the gate judges is measured with the smaller cache too.
"""

from __future__ import annotations

import numpy as np

from ..bundle.kit import load_runner

LOGITS_BYTES = 1_000_000_000


def kv_cache_effect(
    artifact, kv_cache: str, ids: list[int], context_tokens: int, vocab_size: int
) -> dict:
    # every position's logits are held at once: the window is shortened where they would
    # exceed LOGITS_BYTES (Gemma 3's 262k vocabulary: ~950 tokens)
    longest = max(64, LOGITS_BYTES // (4 * max(vocab_size, 1)))
    window = [int(i) for i in ids[: min(context_tokens, longest)]]
    rows = {}
    for name, settings in (("default", {}), (kv_cache, {"kv_cache": kv_cache})):
        runner = load_runner(artifact.runtime, artifact.path, n_ctx=len(window) + 8, **settings)
        rows[name] = np.asarray(runner.logits(window), dtype=np.float32)[len(window) // 2 :]
        del runner
    p, q = _log_softmax(rows["default"]), _log_softmax(rows[kv_cache])
    kl = float((np.exp(p) * (p - q)).sum(-1).mean())
    top1 = float((p.argmax(-1) == q.argmax(-1)).mean())
    return {
        "type": kv_cache,
        "context_tokens": len(window),
        "target_context_tokens": context_tokens,
        "positions": int(p.shape[0]),
        "kl_vs_default_mean": round(kl, 6),
        "top1_agreement_vs_default": round(top1, 4),
    }


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
