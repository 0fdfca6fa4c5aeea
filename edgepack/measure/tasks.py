"""Task sets for `build --eval-tasks`: the JSONL rows, read and validated, without a backend.

Two kinds of row, one JSON object a line (blank lines are skipped):

    {"question": "...", "choices": ["...", ...], "answer": 0 | "choice text",
     "category": "...", "passage": "..."}                                  multiple choice
    {"prompt": "...", "answer": "..." | ["...", ...], "match": "exact" | "contains",
     "category": "...", "max_new_tokens": 16}                               generation

A multiple-choice row is scored as lm-evaluation-harness scores its multiple-choice tasks: the
context is `Question: QUESTION\\nAnswer:` (after `PASSAGE\\n\\n` where a passage is given), each
choice is the continuation ` CHOICE`, and the answer is the choice of the highest summed
log-likelihood of its tokens (lm-eval's `acc`). A generation row is answered greedily from its
prompt, up to max_new_tokens (default 16), cut at the first line break; `exact` compares the
normalised answer (lower case, outer spaces and punctuation removed) with each accepted
answer, `contains` looks for one in it as a whole word ("4" is not found in "14").
`category` defaults to "all".

The built-in set (`--eval-tasks builtin`, edgepack/data/tasks.jsonl) is 100 items written for
the project in five categories (factual, reasoning, long-context, language, completion), apart
from the calibration, training and evaluation texts.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import EdgepackError

BUILTIN = "builtin"
DEFAULT_NEW_TOKENS = 16
MAX_NEW_TOKENS = 256
MATCHES = ("exact", "contains")
MC_KEYS = {"question", "choices", "answer", "category", "passage"}
GEN_KEYS = {"prompt", "answer", "match", "category", "max_new_tokens"}


class TaskError(EdgepackError):
    """A task file cannot be read, or one of its rows is malformed."""


@dataclass(frozen=True)
class Task:
    category: str
    kind: str  # "choice" | "generate"
    context: str  # what the model reads: the formatted question, or the prompt
    choices: tuple[str, ...] = ()  # choice: the continuations, each with its leading space
    answer: int | tuple[str, ...] = 0  # choice: the right index; generate: accepted answers
    match: str = "exact"
    max_new_tokens: int = DEFAULT_NEW_TOKENS


@dataclass(frozen=True)
class TaskSet:
    name: str  # "built-in" or the file's name
    sha256: str  # of the file's bytes
    tasks: tuple[Task, ...]

    def categories(self) -> list[str]:
        return sorted({t.category for t in self.tasks})


def load_tasks(path: str | Path | None) -> TaskSet:
    """The task set of a JSONL file, or the built-in one (None or "builtin")."""
    if path is None or str(path) == BUILTIN:
        data = resources.files("edgepack").joinpath("data/tasks.jsonl").read_bytes()
        name = "built-in"
    else:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TaskError(f"cannot read the task file {path}: {exc.strerror}") from None
        name = path.name
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TaskError(f"{name} is not UTF-8 text; give a JSONL file of task rows") from None
    tasks = [
        parse_row(line, f"{name} line {n}")
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]
    if not tasks:
        raise TaskError(f"{name} holds no task rows; give one JSON object a line")
    return TaskSet(name, hashlib.sha256(data).hexdigest(), tuple(tasks))


def parse_row(line: str, where: str) -> Task:
    """One row as a Task; a TaskError naming `where` (file and line) and what to fix."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskError(f"{where}: not JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(row, dict):
        raise TaskError(f"{where}: a row is a JSON object, not {type(row).__name__}")
    category = row.get("category", "all")
    if not isinstance(category, str) or not category.strip():
        raise TaskError(f"{where}: 'category' must be a non-empty string")
    if "question" in row and "prompt" in row:
        raise TaskError(f"{where}: give 'question' (multiple choice) or 'prompt', not both")
    if "question" in row:
        return _choice(row, where, category.strip())
    if "prompt" in row:
        return _generation(row, where, category.strip())
    raise TaskError(
        f"{where}: a row needs 'question' and 'choices' (multiple choice) or 'prompt' and "
        "'answer' (generation)"
    )


def _choice(row: dict, where: str, category: str) -> Task:
    _no_unknown(row, MC_KEYS, where)
    question, choices, answer = row["question"], row.get("choices"), row.get("answer")
    passage = row.get("passage")
    if not isinstance(question, str) or not question.strip():
        raise TaskError(f"{where}: 'question' must be a non-empty string")
    if passage is not None and (not isinstance(passage, str) or not passage.strip()):
        raise TaskError(f"{where}: 'passage' must be a non-empty string when given")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise TaskError(f"{where}: 'choices' must be a list of at least two non-empty strings")
    if len({c.strip() for c in choices}) != len(choices):
        raise TaskError(f"{where}: 'choices' lists the same choice twice")
    if isinstance(answer, bool) or not isinstance(answer, int | str):
        raise TaskError(f"{where}: 'answer' must be the right choice's index or its text")
    if isinstance(answer, str):
        stripped = [c.strip() for c in choices]
        if answer.strip() not in stripped:
            raise TaskError(f"{where}: 'answer' {answer!r} is not one of the choices")
        answer = stripped.index(answer.strip())
    if not 0 <= answer < len(choices):
        raise TaskError(
            f"{where}: 'answer' {answer} is out of range: 0 to {len(choices) - 1} for "
            f"{len(choices)} choices"
        )
    context = f"Question: {question.strip()}\nAnswer:"
    if passage:
        context = f"{passage.strip()}\n\n{context}"
    return Task(category, "choice", context, tuple(f" {c.strip()}" for c in choices), answer)


def _generation(row: dict, where: str, category: str) -> Task:
    _no_unknown(row, GEN_KEYS, where)
    prompt, answer = row["prompt"], row.get("answer")
    match, limit = row.get("match", "exact"), row.get("max_new_tokens", DEFAULT_NEW_TOKENS)
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskError(f"{where}: 'prompt' must be a non-empty string")
    answers = [answer] if isinstance(answer, str) else answer
    if not isinstance(answers, list) or not answers:
        raise TaskError(f"{where}: 'answer' must be a string or a list of accepted strings")
    if not all(isinstance(a, str) and normalise(a) for a in answers):
        raise TaskError(f"{where}: every answer must be a string with a word in it")
    if match not in MATCHES:
        raise TaskError(f"{where}: 'match' {match!r} is not one of {', '.join(MATCHES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_NEW_TOKENS:
        raise TaskError(f"{where}: 'max_new_tokens' must be an integer from 1 to {MAX_NEW_TOKENS}")
    return Task(category, "generate", prompt, (), tuple(answers), match, limit)


def _no_unknown(row: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise TaskError(
            f"{where}: unknown key {unknown[0]!r}; a row of this kind takes "
            f"{', '.join(sorted(allowed))}"
        )


def normalise(text: str) -> str:
    """Lower case, inner spaces collapsed, outer spaces and punctuation removed."""
    return " ".join(text.lower().split()).strip(" .,;:!?\"'()[]")


def answer_text(generated: str) -> str:
    """What a generation row answered: the text up to its first line break (after any
    leading ones)."""
    return generated.lstrip("\n").split("\n", 1)[0]


def is_correct(task: Task, generated: str) -> bool:
    said = normalise(answer_text(generated))
    if task.match == "exact":
        return any(said == normalise(a) for a in task.answer)
    return any(re.search(rf"(?<!\w){re.escape(normalise(a))}(?!\w)", said) for a in task.answer)
