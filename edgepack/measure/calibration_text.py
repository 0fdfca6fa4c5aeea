"""Calibration text for data-aware quantization, and the samples cut from it.

Data-aware quantizers (NNCF's AWQ and scale estimation, ONNX Runtime's static int8, llama.cpp's
importance matrix) look at the activations the model produces on some text. edgepack ships a
text written for the project (edgepack/data/calibration.txt: prose, dialogue, a little code, a
table of numbers, a chat-formatted exchange), kept separate from the evaluation text
(edgepack/data/eval.txt) so that quality is never measured on the text a model was calibrated
on. Users give their own text (`--calibration FILE`) to calibrate on their domain.

A precision states in the registry whether it uses calibration (Precision.calibration):
"none" (data-free), "optional" (data-aware when a text is given, data-free otherwise) or
"required" (always data-aware: the built-in text when none is given). The export cache keys a
data-aware export by the text's digest, so calibrated and data-free exports never mix.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from ..errors import EdgepackError

MIN_WORDS = 300  # below this a calibration text covers too few activations to mean anything
BUILTIN = "built-in"
DEFAULT_SAMPLES = 24
DEFAULT_SAMPLE_TOKENS = 128


def builtin_text() -> str:
    return resources.files("edgepack").joinpath("data/calibration.txt").read_text(encoding="utf-8")


def calibration_text(path: str | Path | None = None) -> tuple[str, str]:
    """(name, text): the user's calibration file, or the built-in text."""
    if path is None:
        return BUILTIN, builtin_text()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgepackError(
            f"cannot read the calibration text {path}: {exc}; give a UTF-8 text file"
        ) from None
    words = len(text.split())
    if words < MIN_WORDS:
        raise EdgepackError(
            f"calibration text {path} has {words} words; give at least {MIN_WORDS} words of "
            "text like the model's expected inputs (or omit it to use the built-in text)"
        )
    return path.name, text


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def effective(mode: str, text: str | None) -> str | None:
    """The text a precision with this calibration mode is exported with (None: data-free)."""
    if mode == "none":
        return None
    if mode == "optional":
        return text
    if mode == "required":
        return text if text is not None else builtin_text()
    raise ValueError(f"unknown calibration mode {mode!r}; expected none, optional or required")


def describe(text: str) -> dict:
    """What Artifact.details records about the text (the digest identifies it exactly)."""
    sha = digest(text)
    return {
        "text": BUILTIN if sha == digest(builtin_text()) else "user",
        "sha256": sha,
        "words": len(text.split()),
    }


def windows(n_tokens: int, samples: int, length: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of `samples` windows of `length` tokens spread evenly over a
    text of n_tokens (disjoint while the text is long enough, overlapping otherwise)."""
    if samples < 1 or length < 1:
        raise ValueError("samples and length must be positive")
    if n_tokens < length:
        raise EdgepackError(
            f"the calibration text has {n_tokens} tokens, fewer than one sample of {length}; "
            "give a longer text"
        )
    span = n_tokens - length
    if samples == 1:
        return [(0, length)]
    starts = sorted({round(i * span / (samples - 1)) for i in range(samples)})
    return [(s, s + length) for s in starts]


def tokenize(model_dir: Path, text: str) -> list[int]:
    """The source model's token ids of the text (no special tokens added; special-token
    markup written in the text, such as a chat template's, is parsed as the model would)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return list(tok(text, add_special_tokens=False, verbose=False)["input_ids"])


def token_samples(
    model_dir: Path,
    text: str,
    samples: int = DEFAULT_SAMPLES,
    length: int = DEFAULT_SAMPLE_TOKENS,
) -> list[list[int]]:
    """`samples` token-id sequences of `length` tokens cut from the text, each after what the
    tokenizer puts before a text (its BOS, where it has one), as the model sees a prompt."""
    from transformers import AutoTokenizer

    from .reference import start_ids

    ids = tokenize(model_dir, text)
    begin = start_ids(AutoTokenizer.from_pretrained(model_dir))
    return [begin + ids[s:e] for s, e in windows(len(ids), samples, length)]


def text_samples(
    model_dir: Path,
    text: str,
    samples: int = DEFAULT_SAMPLES,
    length: int = DEFAULT_SAMPLE_TOKENS,
) -> list[str]:
    """The same windows as strings (for APIs that tokenize calibration text themselves)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = list(tok(text, add_special_tokens=False, verbose=False)["input_ids"])
    return [tok.decode(ids[s:e]) for s, e in windows(len(ids), samples, length)]
