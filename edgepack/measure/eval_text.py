"""The evaluation text of the quality gate: WikiText-2's test split by default, the project's
own text, or the user's file, and the first tokens of it (edgepack.measure.quality measures on
them).

Light: no numpy, no backend; the CLI checks a user's file with it before loading a model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import EdgepackError

DEFAULT_TEXT = "wikitext-2-test"
# builtin key -> (name recorded with the figures, packaged file)
BUILTIN_TEXTS = {
    "wikitext-2-test": ("wikitext-2-test", "data/wikitext-2/test.txt"),
    "project": ("built-in", "data/eval.txt"),  # a text written for the project
}


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
