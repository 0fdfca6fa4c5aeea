"""Quality measured in the target runtime, against the PyTorch fp32 reference.

The evaluation text (a text written for the project, shipped as edgepack/data/eval.txt, or the
user's --eval-data file) is tokenized once by the source tokenizer and cut into chunks of
CHUNK_TOKENS; as llama.cpp's perplexity tool does, each chunk is evaluated from an empty context
and only its second half is scored, so that every scored token has at least CHUNK_TOKENS / 2
tokens of context. On the scored positions:

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
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import EdgepackError

CHUNK_TOKENS = 512
MAX_EVAL_TOKENS = 4096  # 8 chunks: enough for stable ratios, quick on a CPU


@dataclass
class EvalReference:
    name: str  # the text's file name, or "built-in"
    sha256: str
    ids: list[int]
    chunks: list[tuple[int, int]]  # [start, end) token ranges evaluated from an empty context
    logprobs: np.ndarray  # [scored, vocab] float16 reference log-probabilities, scored positions
    perplexity: float


def eval_text(path: str | Path | None = None) -> tuple[str, str]:
    """(name, text) of the evaluation text: the user's file, or the built-in one."""
    if path is None:
        text = resources.files("edgepack").joinpath("data/eval.txt").read_text(encoding="utf-8")
        return "built-in", text
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


def reference_eval(model_dir: Path, text_name: str, text: str, trust_remote_code=False):
    """The fp32 PyTorch reference on the evaluation text (log-probs kept at scored positions)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    ids = tok(text, add_special_tokens=False)["input_ids"][:MAX_EVAL_TOKENS]
    parts = chunks(len(ids))
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code
    ).eval()
    rows, losses = [], []
    with torch.inference_mode():
        for start, end in parts:
            logits = model(torch.tensor([ids[start:end]])).logits[0].float().numpy()
            window = scored(start, end)
            targets = np.asarray(ids[start:end])[window.start + 1 : window.stop + 1]
            logp = log_softmax(logits[window])
            rows.append(logp.astype(np.float16))
            losses.append(-logp[np.arange(len(targets)), targets])
    return EvalReference(
        name=text_name,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        ids=list(ids),
        chunks=parts,
        logprobs=np.concatenate(rows),
        perplexity=float(np.exp(np.concatenate(losses).mean())),
    )


def cached_reference_eval(model_dir: Path, name: str, text: str, cache_dir: Path, trust=False):
    """reference_eval, cached by model content and text under <cache>/references."""
    from .reference import model_key

    digest = hashlib.sha256(text.encode()).hexdigest()
    path = Path(cache_dir) / "references" / f"{model_key(model_dir)}-eval-{digest[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            return EvalReference(
                name=name,
                sha256=digest,
                ids=data["ids"].tolist(),
                chunks=[tuple(c) for c in data["chunks"].tolist()],
                logprobs=data["logprobs"],
                perplexity=float(data["perplexity"]),
            )
    ref = reference_eval(model_dir, name, text, trust)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        ids=np.asarray(ref.ids),
        chunks=np.asarray(ref.chunks),
        logprobs=ref.logprobs,
        perplexity=np.asarray(ref.perplexity),
    )
    tmp.replace(path)
    return ref


@dataclass
class Quality:
    retention: float
    perplexity: float
    reference_perplexity: float
    kl_divergence_mean: float
    top1_agreement: float
    eval_text: str
    eval_tokens: int  # scored positions

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure(runner, ref: EvalReference) -> Quality:
    """Perplexity, KL divergence and top-1 agreement of a runner on the evaluation text."""
    losses, kls, agree, offset = [], [], 0, 0
    for start, end in ref.chunks:
        window = scored(start, end)
        logits = np.asarray(runner.logits(ref.ids[start:end]), dtype=np.float32)[window]
        targets = np.asarray(ref.ids[start:end])[window.start + 1 : window.stop + 1]
        logq = log_softmax(logits)
        logp = ref.logprobs[offset : offset + len(targets)].astype(np.float64)
        offset += len(targets)
        losses.append(-logq[np.arange(len(targets)), targets])
        kls.append((np.exp(logp) * (logp - logq)).sum(-1))
        agree += int((logq.argmax(-1) == logp.argmax(-1)).sum())
    ppl = float(np.exp(np.concatenate(losses).mean()))
    return Quality(
        retention=min(1.0, ref.perplexity / ppl),
        perplexity=ppl,
        reference_perplexity=ref.perplexity,
        kl_divergence_mean=float(np.concatenate(kls).mean()),
        top1_agreement=agree / max(offset, 1),
        eval_text=ref.name,
        eval_tokens=offset,
    )
