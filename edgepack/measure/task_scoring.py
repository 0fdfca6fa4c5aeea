"""Task accuracy in the target runtime, against the fp32 PyTorch reference (`--eval-tasks`).

The source model's tokenizer turns every task into ids once (as the evaluation text's are);
the fp32 reference answers them in PyTorch, and each candidate answers the same ids through
its own runner (the bundle's: `logits` for the choices, `generate` for generation rows, its own
detokenizer for what it said). Accuracy per category and in all, the reference's, their ratio
(retention, capped at 1, with a 95 % paired bootstrap interval over items: the gate can judge
its lower bound, as for perplexity), and agreement: the share of items where the candidate
gave the reference's answer, right or wrong.

The reference is cached under <cache>/references by the model's content and the task file's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..cache import write_atomic
from .estimators import LEVEL, RESAMPLES, SEED, log_softmax
from .quality import runner_digest
from .tasks import Task, TaskSet, answer_text, is_correct, normalise

VERSION = 1


@dataclass
class TaskReference:
    task_set: str
    sha256: str
    categories: list[str]
    items: list[dict]  # per task: "kind", ids ("context"/"choices" or "prompt"), "answer"
    answers: list  # the reference's: a choice index, or its normalised generated answer
    correct: list[bool]
    eos: list[int]  # the model's end-of-text ids: a generation's answer stops before them


def reference_tasks(model_dir: Path, tasks: TaskSet, cache: Path | None, trust=False):
    """The reference's answers to `tasks`, from the cache when computed before."""
    from ..cache import content_key
    from .reference_model import dtype_of, key_suffix

    path = None
    if cache is not None:
        suffix = key_suffix(dtype_of(model_dir))
        key = f"{content_key(model_dir)}-tasks-{tasks.sha256[:16]}-v{VERSION}{suffix}"
        path = Path(cache) / "references" / f"{key}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            return TaskReference(**{**data, "task_set": tasks.name})
    ref = _compute(Path(model_dir), tasks, trust)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(ref)))
    return ref


def _compute(model_dir: Path, tasks: TaskSet, trust: bool) -> TaskReference:
    import torch
    from transformers import AutoTokenizer

    from ..bundle.kit import devicekit
    from .reference import start_ids
    from .reference_model import dtype_of, load

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    model = load(model_dir, dtype_of(model_dir), trust)
    begin = start_ids(tok)
    eos = devicekit().eos_token_ids(str(model_dir))
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    items = [_encode(encode, t) for t in tasks.tasks]

    class Reference:  # what _answer asks of a runner, over PyTorch
        def choice_scores(self, context, choices):
            """Every choice in one batch, right-padded (the padding is masked and unread)."""
            rows = [begin + list(context) + list(c) for c in choices]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask).logits.float().numpy()
            first = len(begin) + len(context) - 1
            return [
                _summed(logits[i, first : first + len(c)], c) for i, c in enumerate(choices)
            ]

        def generated(self, ids, n):
            with torch.inference_mode():
                out = model.generate(
                    torch.tensor([begin + list(ids)]),
                    attention_mask=torch.ones(1, len(begin) + len(ids), dtype=torch.long),
                    max_new_tokens=n,
                    do_sample=False,
                    eos_token_id=sorted(eos) or None,
                    pad_token_id=(sorted(eos) or [0])[0],
                )
            new = [int(i) for i in out[0, len(begin) + len(ids) :] if int(i) not in eos]
            return tok.decode(new, skip_special_tokens=True)

    answers = [_answer(Reference(), t, item) for t, item in zip(tasks.tasks, items, strict=True)]
    return TaskReference(
        tasks.name,
        tasks.sha256,
        [t.category for t in tasks.tasks],
        items,
        [a for a, _ in answers],
        [c for _, c in answers],
        sorted(eos),
    )


def _encode(encode, task: Task) -> dict:
    """The task's ids by the source tokenizer. A continuation's ids are those the whole text
    (context + choice) ends with, where the context's own ids begin it (lm-eval's split)."""
    if task.kind == "generate":
        return {"kind": "generate", "prompt": list(encode(task.context))}
    context = list(encode(task.context))
    choices = []
    for choice in task.choices:
        whole = list(encode(task.context + choice))
        cut = whole[len(context) :] if whole[: len(context)] == context else None
        choices.append(cut or list(encode(choice)))
    return {"kind": "choice", "context": context, "choices": choices}


def _answer(runner, task: Task, item: dict) -> tuple:
    """(the runner's answer, whether it is right) for one task."""
    if item["kind"] == "choice":
        pick = int(np.argmax(runner.choice_scores(item["context"], item["choices"])))
        return pick, pick == task.answer
    said = runner.generated(item["prompt"], task.max_new_tokens)
    return normalise(answer_text(said)), is_correct(task, said)


def loglikelihood(runner, context: list[int], continuation: list[int]) -> float:
    """Summed log-probability of `continuation` after `context`, from one fresh context."""
    logits = np.asarray(runner.logits(list(context) + list(continuation)), dtype=np.float32)
    return _summed(logits[len(context) - 1 : len(context) - 1 + len(continuation)], continuation)


def _summed(rows: np.ndarray, continuation: list[int]) -> float:
    """Summed log-probability of the continuation's tokens, from the logits predicting them."""
    logp = log_softmax(np.asarray(rows, dtype=np.float32))
    return float(logp[np.arange(len(continuation)), continuation].sum())


class _Generating:
    """A kit runner with the reference's generation interface: greedy, end of text dropped,
    said in the runner's own detokenizer."""

    def __init__(self, runner, eos: set[int]):
        self.runner, self.eos = runner, eos

    def choice_scores(self, context, choices):
        return [loglikelihood(self.runner, context, c) for c in choices]

    def generated(self, ids, n):
        tokens = self.runner.generate(list(ids), n, stop_at_eos=True).tokens
        return self.runner.detokenize([t for t in tokens if t not in self.eos])


def score(runner, ref: TaskReference, tasks: TaskSet, cache: Path | None = None) -> dict:
    """The candidate's task accuracy through its runner, beside the reference's; cached under
    `cache` by the artifact's content, the runtime and the reference's answers (a second build
    of the same export on the same tasks reuses it)."""
    path = None
    if cache is not None:
        salt = hashlib.sha256(json.dumps(asdict(ref), sort_keys=True).encode()).hexdigest()
        digest = runner_digest(runner, f"tasks-v{VERSION}|{salt}|{RESAMPLES}|{SEED}|{LEVEL}")
        if digest is not None:
            path = Path(cache) / "references" / "measured" / f"tasks-{digest[:32]}.json"
            if path.is_file():
                return {**json.loads(path.read_text()), "task_set": ref.task_set}
    wrapped = _Generating(runner, set(ref.eos))
    answers = [_answer(wrapped, t, item) for t, item in zip(tasks.tasks, ref.items, strict=True)]
    correct = np.array([c for _, c in answers], dtype=bool)
    same = np.array([a == r for (a, _), r in zip(answers, ref.answers, strict=True)], dtype=bool)
    result = summarise(ref, correct, same)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(result))
    return result


def summarise(ref: TaskReference, correct: np.ndarray, same: np.ndarray) -> dict:
    """Accuracy, reference accuracy, retention with its interval and agreement, in all and per
    category (pure: unit-tested from arrays)."""
    reference = np.asarray(ref.correct, dtype=bool)
    categories = np.asarray(ref.categories)

    def row(mask) -> dict:
        c, r = correct[mask], reference[mask]
        low, high = retention_interval(c, r)
        return {
            "items": int(mask.sum()),
            "accuracy": float(c.mean()),
            "reference_accuracy": float(r.mean()),
            "retention": retention(c.sum(), r.sum()),
            "retention_low": low,
            "retention_high": high,
            "agreement": float(same[mask].mean()),
        }

    everything = row(np.ones(len(correct), dtype=bool))
    return {
        "task_set": ref.task_set,
        "task_set_sha256": ref.sha256,
        "scoring": "multiple choice: summed log-likelihood of each choice (lm-eval acc); "
        "generation: greedy, exact or contains",
        **everything,
        "categories": [
            {"category": name, **row(categories == name)} for name in sorted(set(ref.categories))
        ],
    }


def retention(correct: int, reference: int) -> float | None:
    """Candidate accuracy over the reference's, capped at 1; None where the reference answers
    nothing right (no ratio to take)."""
    return None if reference == 0 else float(min(1.0, correct / reference))


def retention_interval(correct: np.ndarray, reference: np.ndarray) -> tuple:
    """The 95 % paired bootstrap interval of retention over items (None where undefined)."""
    if reference.sum() == 0:
        return None, None
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(correct), size=(RESAMPLES, len(correct)))
    ref_sums = reference[picks].sum(axis=1)
    ok = ref_sums > 0
    ratios = np.minimum(1.0, correct[picks].sum(axis=1)[ok] / ref_sums[ok])
    tail = (1 - LEVEL) / 2 * 100
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))
