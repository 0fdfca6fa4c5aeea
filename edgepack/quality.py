"""Quality measured in the target runtime, against the PyTorch fp32 reference.

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
the paired ratio exp(mean reference NLL - mean candidate NLL) on the same resampled chunks, and
the 2.5 and 97.5 percentiles of those. Paired, so the text's own difficulty cancels and only how
unevenly the candidate loses across the text widens it. The gate compares a target's floor with
the lower bound.

The size. EVAL_SCORED_TOKENS was chosen with tools/eval_curve.py on the default model: the
retention of real candidates against the number of scored tokens, the smallest size at which
every candidate stays within +-0.005 of its value at the largest size measured:

{CURVE}

The reference. Holding the reference's log-probabilities at every scored position is
[scored, vocab]: ~100 KB a token at 49,152 tokens of vocabulary, 5x that at Gemma 3's 262k.
EvalReference keeps instead, per scored position, the reference's NLL of the true next token
(what retention needs, exact), its TOP_K most likely tokens with their log-probabilities, and
the log of the remaining tail's mass. KL is computed over those TOP_K + 1 bins (the tail merged
into one), which never exceeds the exact KL (merging bins cannot increase a divergence);
{KL_ERROR}
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import EdgepackError

CHUNK_TOKENS = 512
EVAL_SCORED_TOKENS = 4096  # the default size, chosen as the module's docstring says
MAX_EVAL_TOKENS = 4096  # the cap of a text judged as a whole (edgepack distill's comparison)
TOP_K = 256  # reference tokens kept per scored position for KL and top-1 agreement
RESAMPLES = 2000
SEED = 0
LEVEL = 0.95

DEFAULT_TEXT = "wikitext-2-test"
# builtin key -> (name recorded with the figures, packaged file)
BUILTIN_TEXTS = {
    "wikitext-2-test": ("wikitext-2-test", "data/wikitext-2/test.txt"),
    "project": ("built-in", "data/eval.txt"),  # a text written for the project
}


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
    perplexity: float
    # (folder, key) where measurements on this reference are cached; None: not cached
    cache: tuple[Path, str] | None = None

    @property
    def scored_tokens(self) -> int:
        return len(self.nll)

    @property
    def logprobs(self) -> np.ndarray:
        """The stored top-k log-probabilities, [scored, k]."""
        return self.top_logprobs


def eval_text(path: str | Path | None = None, builtin: str = DEFAULT_TEXT) -> tuple[str, str]:
    """(name, text) of the evaluation text: the user's file, else a packaged one: `builtin`
    "wikitext-2-test" (the default) or "project" (edgepack/data/eval.txt, name "built-in")."""
    if path is None:
        if builtin not in BUILTIN_TEXTS:
            raise ValueError(f"unknown built-in text {builtin!r}; one of {sorted(BUILTIN_TEXTS)}")
        name, member = BUILTIN_TEXTS[builtin]
        return name, resources.files("edgepack").joinpath(member).read_text(encoding="utf-8")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgepackError(f"cannot read the evaluation text {path}: {exc}") from None
    if len(text.split()) < 200:
        raise EdgepackError(
            f"evaluation text {path} has {len(text.split())} words; give at least 200 so that "
            "perplexity means something"
        )
    return path.name, text


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


def first_tokens(encode, text: str, n: int) -> list[int]:
    """The first n token ids of text, tokenizing only a prefix of it (a long text such as
    WikiText-2 is 1.2 MB). The prefix ends at a line break and holds a margin of tokens beyond
    n, so the ids equal those of the whole text's tokenization."""
    size = max(n * 8, 4096)
    while True:
        if size >= len(text):
            return list(encode(text))[:n]
        cut = text.rfind("\n", 0, size) + 1 or size
        ids = list(encode(text[:cut]))
        if len(ids) >= n + 64:
            return ids[:n]
        size *= 2


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits."""
    logp = log_softmax(logits)
    return -logp[np.arange(len(targets)), targets]


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    """exp(mean NLL) of targets given logits: [n, vocab] and [n]."""
    return float(np.exp(nll(logits, targets).mean()))


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


def kl_top_k(top_ids, top_logp, tail_logp, logq: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) per row over the reference's top-k tokens and one bin for the
    rest: a lower bound of the exact KL, tight when the tail holds little mass."""
    p_logp = top_logp.astype(np.float64)
    q_top = np.take_along_axis(logq, top_ids, 1)
    head = (np.exp(p_logp) * (p_logp - q_top)).sum(-1)
    p_tail, q_tail = np.exp(tail_logp), _log_rest(q_top)
    with np.errstate(invalid="ignore"):
        tail = np.where(p_tail > 0, p_tail * (tail_logp - np.maximum(q_tail, -700.0)), 0.0)
    return head + tail


def reference_eval(
    model_dir: Path,
    text_name: str,
    text: str,
    trust_remote_code=False,
    scored_tokens: int = EVAL_SCORED_TOKENS,
    k: int = TOP_K,
) -> EvalReference:
    """The fp32 PyTorch reference on the first chunks of the text that hold scored_tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids = first_tokens(encode, text, tokens_for(scored_tokens))
    parts = chunks(len(ids))
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code
    ).eval()
    losses, tops = [], []
    with torch.inference_mode():
        for start, end in parts:
            logits = model(torch.tensor([ids[start:end]])).logits[0].float().numpy()
            window = scored(start, end)
            targets = np.asarray(ids[start:end])[window.start + 1 : window.stop + 1]
            logp = log_softmax(logits[window])
            losses.append(-logp[np.arange(len(targets)), targets])
            tops.append(top_k(logp, k))
    losses = np.concatenate(losses)
    return EvalReference(
        name=text_name,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        ids=list(ids),
        chunks=parts,
        nll=losses,
        top_ids=np.concatenate([t[0] for t in tops]),
        top_logprobs=np.concatenate([t[1] for t in tops]),
        tail_logprob=np.concatenate([t[2] for t in tops]),
        perplexity=float(np.exp(losses.mean())),
    )


_ARRAYS = ("nll", "top_ids", "top_logprobs", "tail_logprob")


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
    from .reference import model_key

    digest = hashlib.sha256(text.encode()).hexdigest()
    stem, tail = f"{model_key(model_dir)}-eval-{digest[:16]}-s", f"-k{TOP_K}.npz"
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
    ref.cache = (folder, f"{stem}{scored_tokens}-k{TOP_K}")
    return ref


def prefix(ref: EvalReference, scored_tokens: int) -> EvalReference:
    """The reference a measurement of scored_tokens would make: its first chunks."""
    n_tokens = tokens_for(scored_tokens)
    keep = [c for c in ref.chunks if c[1] <= n_tokens]
    n = sum((b - a) - (b - a) // 2 for a, b in keep)
    arrays = {a: getattr(ref, a)[:n] for a in _ARRAYS}
    ppl = float(np.exp(arrays["nll"].mean()))
    return EvalReference(ref.name, ref.sha256, ref.ids[:n_tokens], keep, **arrays, perplexity=ppl)


def retention_point(ref_nll: np.ndarray, nll_sums: np.ndarray, tokens: np.ndarray) -> float:
    """Reference perplexity / candidate perplexity, capped at 1, from per-chunk NLL sums."""
    return min(1.0, float(np.exp((ref_nll.sum() - nll_sums.sum()) / tokens.sum())))


def retention_interval(
    ref_nll: np.ndarray,
    nll_sums: np.ndarray,
    tokens: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Paired percentile bootstrap of retention over chunks, from per-chunk sums of the
    reference's and the candidate's NLL and the chunks' scored-token counts."""
    ref_nll, nll_sums = np.asarray(ref_nll, np.float64), np.asarray(nll_sums, np.float64)
    tokens = np.asarray(tokens, np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(tokens), size=(resamples, len(tokens)))
    diff = (ref_nll - nll_sums)[pick].sum(1) / tokens[pick].sum(1)
    ratios = np.minimum(1.0, np.exp(diff))
    tail = (1.0 - level) / 2
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass
class Quality:
    retention: float  # the point estimate
    retention_low: float  # the 95 % bootstrap interval over chunks
    retention_high: float
    perplexity: float
    reference_perplexity: float
    kl_divergence_mean: float  # over the reference's top kl_top_k tokens and the tail's bin
    top1_agreement: float
    eval_text: str  # the text's name
    eval_text_sha256: str
    eval_tokens: int  # scored positions
    eval_chunks: int
    kl_top_k: int

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class ChunkScores:
    """Per-chunk sums of one candidate on an EvalReference, in the text's order."""

    nll: np.ndarray  # the candidate's NLL
    ref_nll: np.ndarray  # the reference's NLL of the same targets
    kl: np.ndarray
    agree: np.ndarray  # top-1 agreements
    tokens: np.ndarray  # scored positions
    seconds: np.ndarray  # wall time of the runner's forward pass and the scoring


def score_chunks(runner, ref: EvalReference, limit: int | None = None) -> ChunkScores:
    """Run the candidate on the reference's chunks (the first `limit` of them) and score it."""
    rows = []
    offset = 0
    for start, end in ref.chunks[:limit]:
        began = time.perf_counter()
        window = scored(start, end)
        logits = np.asarray(runner.logits(ref.ids[start:end]), dtype=np.float32)[window]
        targets = np.asarray(ref.ids[start:end])[window.start + 1 : window.stop + 1]
        logq = log_softmax(logits)
        here = slice(offset, offset + len(targets))
        offset += len(targets)
        top = ref.top_ids[here]
        kl = kl_top_k(top, ref.top_logprobs[here], ref.tail_logprob[here], logq)
        rows.append(
            (
                -logq[np.arange(len(targets)), targets].sum(),
                ref.nll[here].sum(),
                kl.sum(),
                int((logq.argmax(-1) == top[:, 0]).sum()),
                len(targets),
                time.perf_counter() - began,
            )
        )
    columns = [np.asarray(c, dtype=np.float64) for c in zip(*rows, strict=True)]
    return ChunkScores(*columns)


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
    )


def measure(runner, ref: EvalReference) -> Quality:
    """Perplexity, KL divergence, top-1 agreement and retention with its interval of a runner
    on the evaluation text. With a cached reference, the result is cached beside it, keyed by
    the artifact's content (every byte of the runner's model directory), the runtime and its
    version: a second build of the same export on the same text reuses the measurement."""
    path = _measurement_path(runner, ref)
    if path is not None and path.is_file():
        return Quality(**json.loads(path.read_text()))
    quality = summarize(score_chunks(runner, ref), ref)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(quality)))
        tmp.replace(path)
    return quality


def _measurement_path(runner, ref: EvalReference) -> Path | None:
    model_dir = getattr(runner, "model_dir", None)
    if ref.cache is None or model_dir is None or not hasattr(runner, "version"):
        return None
    folder, key = ref.cache
    digest = hashlib.sha256(
        f"{key}|{type(runner).__module__}|{runner.version()}|{RESAMPLES}|{SEED}|{LEVEL}|"
        f"{','.join(Quality.__dataclass_fields__)}".encode()
    )
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(model_dir)}:{path.stat().st_size}:".encode())
        with open(path, "rb") as fh:
            while block := fh.read(1 << 24):
                digest.update(block)
    return folder / "measured" / f"{key}-{digest.hexdigest()[:24]}.json"
