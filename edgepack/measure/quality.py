"""Quality measured in the target runtime, against the PyTorch reference (fp32, or bf16 for a
large model).

The evaluation text is WikiText-2's test split (shipped with its licence in
edgepack/data/wikitext-2/, name "wikitext-2-test"), so that figures compare with the ones
llama.cpp and NNCF publish, or the user's --eval-data file. Its first EVAL_SCORED_TOKENS * 2
tokens (by the source tokenizer) are cut into chunks of CHUNK_TOKENS; as llama.cpp's perplexity
tool does, each chunk is evaluated from an empty context and only its second half is scored, so
that every scored token has at least CHUNK_TOKENS / 2 tokens of context. On the scored positions:

- perplexity = exp(mean negative log-likelihood of the next token), for the candidate (through
  the on-device runner, never PyTorch) and for the fp32 reference;
- KL divergence of the candidate's next-token distribution from the reference's, averaged;
- top-1 agreement with the reference.

Retention = reference perplexity / candidate perplexity, capped at 1. It reads as the share of
the reference's predictive power kept: 1.0 is lossless, 0.90 means the compressed model is
~11 % more perplexed by ordinary text. Perplexity is what llama.cpp, NNCF and the quantization
literature publish, so the floor is comparable with their tables; it is a ratio, so it does not
depend on how hard the text is. (Capped: a candidate that happens to fit this text better than
its reference has not become better than it.) For encoders, retention is the lowest cosine
similarity of sentence embeddings to the reference.

The interval. Retention comes with a 95 % bootstrap interval over chunks (`retention_low`,
`retention_high`): RESAMPLES resamples of the chunks with replacement (seed SEED), each giving
the paired ratio exp(mean reference NLL - mean candidate NLL) on the same resampled chunks; the
2.5 and 97.5 percentiles. Paired, so the text's own difficulty cancels and only how unevenly
the candidate loses across the text widens it. The gate compares a floor with the lower bound.

The size, EVAL_SCORED_TOKENS = 4096 (16 chunks, 8192 tokens of text), from the retention of
real candidates of the default model against the number of scored tokens of WikiText-2
(`.venv/bin/python tools/eval_curve.py --sizes 512,1024,2048,4096,8192,16384`, runners of the
cached exports, a 2-core host under load; the smaller sizes are the first chunks of the largest):

    scored tokens          512   1024   2048   4096   8192  16384   95 % at 4096   s at 4096
    gguf q8_0           0.9998 0.9987 0.9963 0.9956 0.9965 0.9965   0.993-0.998       228
    openvino int4_mixed 0.8442 0.8677 0.8636 0.8628 0.8580 0.8584   0.842-0.883       153
    gguf q4_0           0.9615 0.9188 0.9054 0.8441 0.8364 0.8491   0.808-0.881       294
    onnx int4           0.8163 0.8225 0.8087 0.7927 0.7770 0.7850   0.771-0.816       151
    openvino int4       0.8389 0.8365 0.8274 0.8114 0.8064 0.8150   0.791-0.831       114
    gguf q4_k_m         0.9992 0.9895 0.9679 0.9633 0.9598 0.9603   0.946-0.978       260

Staying within +-0.005 of the value at 16384 holds from 2048 on for q8_0 and from 4096 on for
int4_mixed and q4_k_m, but for no smaller size for q4_0, onnx int4 and openvino int4: their
loss differs from article to article by more than that (q4_0 moves by 0.013 from 8192 to 16384,
and its interval at 16384 is still +-0.016; +-0.005 would take ~10x the tokens, more than the
156k scored tokens the whole test split offers at 512-token chunks). What holds from 4096 on
is the interval: every candidate's interval at 4096 and 8192 contains its retention at 16384,
while at 2048 those of q4_0 (0.877-0.937) and onnx int4 (0.788-0.832) miss it (8 chunks of the
first articles are too alike to stand for the text). So 4096 is the smallest size whose
interval is honest, and the lower-bound gate carries what the size leaves uncertain. (The 512
scored tokens of the project's own text, edgepack/data/eval.txt, had judged int4_mixed 0.918.)

The reference. Its log-probabilities at every scored position would be [scored, vocab]: ~100 KB
a token at 49,152 tokens of vocabulary, 5x that at Gemma 3's 262k. EvalReference keeps instead,
per scored position, the reference's NLL of the true next token (retention needs only that,
exact), its TOP_K most likely tokens with their log-probabilities, the log of the remaining
mass, and TAIL_SAMPLES tokens drawn from that remainder (seeded per chunk): ~4 KB a token. KL
is exact over the top tokens and estimated without bias over the rest (the tail's mass times
the mean log-ratio of the samples). Measured against the exact KL on the first 1024 scored
tokens (`tools/eval_curve.py --sizes 512,1024 --kl-check 4`) the estimate is off by +0.03 % (q4_0,
exact 0.244), +0.00 % (int4_mixed, 0.136), -0.10 % (onnx int4, 0.294), -0.20 % (q4_k_m, 0.048)
and -0.86 % (q8_0, 0.0035), where one bin for the tail would have missed 13 % (top 256) or
5.5 % (top 1024) of every candidate's KL.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..cache import write_atomic
from .estimators import (
    LEVEL,
    RESAMPLES,
    SEED,
    TOP_K,
    chunks,
    kl_estimate,
    log_softmax,
    retention_interval,
    retention_point,
    scored,
    tail_sample,
    tokens_for,
    top_k,
)
from .eval_text import BUILTIN_TEXTS, DEFAULT_TEXT, eval_text, first_tokens  # noqa: F401

EVAL_SCORED_TOKENS = 4096  # the default size, chosen as the module's docstring says
MAX_EVAL_TOKENS = 4096  # the cap of a text judged as a whole (edgepack distill's comparison)
TAIL_SAMPLES = 256  # tokens drawn from the rest of the reference's distribution, for KL
EVAL_VERSION = 2  # bump when the reference evaluation changes (2: chunks begin with the start ids)


@dataclass
class EvalReference:
    name: str  # the text's name: "wikitext-2-test", "built-in" or the user's file name
    sha256: str  # of the whole text
    ids: list[int]  # the tokens evaluated
    chunks: list[tuple[int, int]]  # [start, end) token ranges evaluated from an empty context
    nll: np.ndarray  # [scored] float64: the reference's NLL of each scored position's target
    top_ids: np.ndarray  # [scored, k] int32: the reference's k most likely next tokens, best first
    top_logprobs: np.ndarray  # [scored, k] float32: their log-probabilities
    tail_logprob: np.ndarray  # [scored] float64: log of the probability mass outside the top k
    sample_ids: np.ndarray  # [scored, m] int32: tokens drawn from the distribution outside them
    sample_logprobs: np.ndarray  # [scored, m] float32: their log-probabilities
    perplexity: float
    # (folder, key) where measurements on this reference are cached; None: not cached
    cache: tuple[Path, str] | None = None
    dtype: str = "float32"  # what the reference model ran in (edgepack.measure.reference_model)

    @property
    def scored_tokens(self) -> int:
        return len(self.nll)

    @property
    def logprobs(self) -> np.ndarray:
        """The stored top-k log-probabilities, [scored, k]."""
        return self.top_logprobs


def reference_eval(
    model_dir: Path,
    text_name: str,
    text: str,
    trust_remote_code=False,
    scored_tokens: int = EVAL_SCORED_TOKENS,
    k: int = TOP_K,
    m: int = TAIL_SAMPLES,
) -> EvalReference:
    """The PyTorch reference (float32, or bfloat16 for a large model: reference_model) on the
    first chunks of the text that hold scored_tokens."""
    import torch
    from transformers import AutoTokenizer

    from .reference import start_ids
    from .reference_model import dtype_of, load

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    encode = lambda s: tok(s, add_special_tokens=False, verbose=False)["input_ids"]  # noqa: E731
    ids = first_tokens(encode, text, tokens_for(scored_tokens))
    begin = start_ids(tok)  # every chunk is a fresh context, as in the kit's runners
    parts = chunks(len(ids))
    model = load(model_dir, dtype_of(model_dir), trust_remote_code)
    losses, tops = [], []
    with torch.inference_mode():
        for i, (start, end) in enumerate(parts):
            inputs = torch.tensor([begin + ids[start:end]])
            window = scored(start, end)
            targets = np.asarray(ids[start:end])[window.start + 1 : window.stop + 1]
            logp = log_softmax(_scored_logits(model, inputs, end - start, window))
            losses.append(-logp[np.arange(len(targets)), targets])
            top = top_k(logp, k)
            # seeded per chunk: a smaller size's reference is the first chunks of a larger one's
            tops.append(top + tail_sample(logp, top[0], m, np.random.default_rng([SEED, i])))
    losses = np.concatenate(losses)
    arrays = {a: np.concatenate([t[i] for t in tops]) for i, a in enumerate(_ARRAYS[1:])}
    digest = hashlib.sha256(text.encode()).hexdigest()
    return EvalReference(
        text_name,
        digest,
        list(ids),
        parts,
        losses,
        **arrays,
        perplexity=float(np.exp(losses.mean())),
    )


def _scored_logits(model, inputs, n: int, window: slice) -> np.ndarray:
    """The chunk's logits at the scored positions only, float32: the head runs on the last
    n - window.start positions (logits_to_keep), not on the whole chunk, which a 262k
    vocabulary makes 0.5 GB for 512 tokens. A model whose forward does not take the argument
    (remote code) computes them all."""
    keep = n - window.start  # the scored positions and the last one, which has no target
    try:
        logits = model(inputs, logits_to_keep=keep).logits[0]
    except TypeError:
        logits = model(inputs).logits[0, -keep:]
    return logits[: window.stop - window.start].float().numpy()


_ARRAYS = ("nll", "top_ids", "top_logprobs", "tail_logprob", "sample_ids", "sample_logprobs")


def cached_reference_eval(
    model_dir: Path,
    name: str,
    text: str,
    cache_dir: Path,
    trust=False,
    scored_tokens: int = EVAL_SCORED_TOKENS,
):
    """reference_eval, cached by model content, text and size under <cache>/references. A cached
    reference of the same text at a larger size serves a smaller one: its first chunks are the
    smaller one's (chunks are evaluated from an empty context, in the text's order)."""
    from ..cache import content_key as model_key
    from .reference_model import dtype_of, key_suffix

    digest = hashlib.sha256(text.encode()).hexdigest()
    dtype = dtype_of(model_dir)
    kind = f"-k{TOP_K}m{TAIL_SAMPLES}-v{EVAL_VERSION}{key_suffix(dtype)}"
    stem, tail = f"{model_key(model_dir)}-eval-{digest[:16]}-s", f"{kind}.npz"
    folder = Path(cache_dir) / "references"
    sizes = [p.name[len(stem) : -len(tail)] for p in folder.glob(f"{stem}*{tail}")]
    larger = sorted(int(n) for n in sizes if n.isdigit() and int(n) >= scored_tokens)
    if larger:
        with np.load(folder / f"{stem}{larger[0]}{tail}") as data:
            ids, parts = data["ids"].tolist(), [tuple(c) for c in data["chunks"].tolist()]
            arrays = {a: data[a] for a in _ARRAYS}
        whole = EvalReference(name, digest, ids, parts, **arrays, perplexity=0.0)
        ref = prefix(whole, scored_tokens)
    else:
        ref = reference_eval(model_dir, name, text, trust, scored_tokens)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{stem}{scored_tokens}.{os.getpid()}.tmp.npz"
        arrays = {a: getattr(ref, a) for a in _ARRAYS}
        np.savez(tmp, ids=np.asarray(ref.ids), chunks=np.asarray(ref.chunks), **arrays)
        tmp.replace(folder / f"{stem}{scored_tokens}{tail}")
    ref.cache = (folder, f"{stem}{scored_tokens}{kind}")
    ref.dtype = dtype
    return ref


def prefix(ref: EvalReference, scored_tokens: int) -> EvalReference:
    """The reference a measurement of scored_tokens would make: its first chunks."""
    n_tokens = tokens_for(scored_tokens)
    keep = [c for c in ref.chunks if c[1] <= n_tokens]
    n = sum((b - a) - (b - a) // 2 for a, b in keep)
    arrays = {a: getattr(ref, a)[:n] for a in _ARRAYS}
    ppl = float(np.exp(arrays["nll"].mean()))
    return EvalReference(ref.name, ref.sha256, ref.ids[:n_tokens], keep, **arrays, perplexity=ppl)


@dataclass
class Quality:
    retention: float  # the point estimate
    retention_low: float  # the 95 % bootstrap interval over chunks
    retention_high: float
    perplexity: float
    reference_perplexity: float
    kl_divergence_mean: float  # top kl_top_k tokens exact, the rest from kl_tail_samples draws
    top1_agreement: float
    eval_text: str  # the text's name
    eval_text_sha256: str
    eval_tokens: int  # scored positions
    eval_chunks: int
    kl_top_k: int
    kl_tail_samples: int

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class ChunkScores:
    """Per-chunk sums of one candidate on an EvalReference, in the text's order: its NLL, the
    reference's NLL of the same targets, KL, top-1 agreements, scored positions, and the wall
    time of the runner's forward pass and the scoring."""

    nll: np.ndarray
    ref_nll: np.ndarray
    kl: np.ndarray
    agree: np.ndarray
    tokens: np.ndarray
    seconds: np.ndarray


def score_chunks(runner, ref: EvalReference, limit: int | None = None) -> ChunkScores:
    """Run the candidate on the reference's chunks (the first `limit` of them) and score it."""
    rows, offset = [], 0
    for start, end in ref.chunks[:limit]:
        began, window = time.perf_counter(), scored(start, end)
        logits = np.asarray(runner.logits(ref.ids[start:end]), dtype=np.float32)[window]
        targets = np.asarray(ref.ids[start:end])[window.start + 1 : window.stop + 1]
        logq, n = log_softmax(logits), len(targets)
        at = slice(offset, offset + n)
        offset += n
        top, samples = ref.top_ids[at], (ref.sample_ids[at], ref.sample_logprobs[at])
        kl = kl_estimate(top, ref.top_logprobs[at], ref.tail_logprob[at], logq, *samples)
        nll = -logq[np.arange(n), targets].sum()
        agree = (logq.argmax(-1) == top[:, 0]).sum()
        rows.append((nll, ref.nll[at].sum(), kl.sum(), agree, n, time.perf_counter() - began))
    return ChunkScores(*(np.asarray(c, dtype=np.float64) for c in zip(*rows, strict=True)))


def summarize(scores: ChunkScores, ref: EvalReference, upto: int | None = None) -> Quality:
    """Quality of the first `upto` chunks (all by default) of a candidate's scores."""
    n = len(scores.tokens) if upto is None else upto
    nll_sums, ref_nll, tokens = scores.nll[:n], scores.ref_nll[:n], scores.tokens[:n]
    total = tokens.sum()
    low, high = retention_interval(ref_nll, nll_sums, tokens)
    return Quality(
        retention=retention_point(ref_nll, nll_sums, tokens),
        retention_low=low,
        retention_high=high,
        perplexity=float(np.exp(nll_sums.sum() / total)),
        reference_perplexity=float(np.exp(ref_nll.sum() / total)),
        kl_divergence_mean=float(scores.kl[:n].sum() / total),
        top1_agreement=float(scores.agree[:n].sum() / total),
        eval_text=ref.name,
        eval_text_sha256=ref.sha256,
        eval_tokens=int(total),
        eval_chunks=int(n),
        kl_top_k=int(ref.top_ids.shape[1]),
        kl_tail_samples=int(ref.sample_ids.shape[1]),
    )


def measure(runner, ref: EvalReference) -> Quality:
    """Perplexity, KL divergence, top-1 agreement and retention with its interval of a runner
    on the evaluation text. With a cached reference, the result is cached beside it, keyed by
    the artifact's content (every byte of the runner's model directory), the runtime and its
    version: a second build of the same export on the same text reuses the measurement."""
    path = _measurement_path(runner, ref)
    if path is not None and path.is_file():
        # the measurement depends on the text's content, not on the name it was given
        return Quality(**{**json.loads(path.read_text()), "eval_text": ref.name})
    quality = summarize(score_chunks(runner, ref), ref)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(quality)))
    return quality


def _measurement_path(runner, ref: EvalReference) -> Path | None:
    if ref.cache is None:
        return None
    folder, key = ref.cache
    salt = f"{key}|{RESAMPLES}|{SEED}|{LEVEL}|{','.join(Quality.__dataclass_fields__)}"
    digest = runner_digest(runner, salt)
    return None if digest is None else folder / "measured" / f"{key}-{digest[:24]}.json"


def runner_digest(runner, salt: str) -> str | None:
    """What a measurement through `runner` depends on: every byte of its model directory, the
    runtime and its version, its KV-cache type, and `salt` (what was measured, and how); None
    for a runner that cannot say (no model_dir or version)."""
    model_dir = getattr(runner, "model_dir", None)
    if model_dir is None or not hasattr(runner, "version"):
        return None
    digest = hashlib.sha256(
        f"{salt}|{type(runner).__module__}|{runner.version()}|"
        f"{getattr(runner, 'kv_cache', None)}".encode()
    )
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(model_dir)}:{path.stat().st_size}:".encode())
        with open(path, "rb") as fh:
            while block := fh.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()
