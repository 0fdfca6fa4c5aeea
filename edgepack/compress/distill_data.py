"""Training text for distillation: read, tokenize, cut into windows, split off a held-out part.

Text files may be large: each is read in chunks of about a megabyte (cut at a line break) and
tokenized chunk by chunk into a compact int32 array, never a Python list of the whole file.
Documents (files) are joined with the tokenizer's end-of-sequence token and cut into
non-overlapping windows of `seq_len` tokens. The last 10 % of the windows (at least one) are held
out: they are never trained on and serve to pick the best checkpoint by KL divergence to the
teacher.

Teacher-generated text (`--generate N`) is for users with little text of their own: the teacher
answers a set of varied prompts by sampling, and the result is added to the training windows
only (never to the held-out ones, so the held-out figures still measure the user's text). It
is saved as `generated.txt` in the output directory and reused by `--resume`. Sampling runs at
about 25 tokens/s on a 2-core CPU (the default model, 8 answers at a time): it suits thousands
of tokens, not millions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import EdgepackError

HELD_OUT_SHARE = 0.10
CHUNK_CHARS = 1 << 20
GENERATED_FILE = "generated.txt"
GENERATE_PROMPTS = (
    "Tell a short story about a child who finds a key in the snow.",
    "Explain how a bicycle stays upright when it moves.",
    "Write a friendly email inviting neighbours to a street party.",
    "What are three good habits for studying, and why do they work?",
    "Describe a busy market in the morning.",
    "Explain what a computer's memory does, for a ten-year-old.",
    "Write a dialogue between two friends planning a trip to the mountains.",
    "How do plants know which way is up?",
    "Give step-by-step instructions for making a cup of tea.",
    "Write a short poem about rain on a tin roof.",
    "What is the difference between weather and climate?",
    "Summarise the rules of football in a few sentences.",
    "Write a Python function that checks whether a word is a palindrome, and explain it.",
    "Why do cats purr?",
    "Describe the history of the printing press in a paragraph.",
    "Give advice to someone starting their first job.",
)


@dataclass
class TrainingText:
    """Token windows for training and held-out evaluation, with where they came from."""

    train: np.ndarray  # [n, seq_len] int32
    held_out: np.ndarray  # [m, seq_len] int32
    files: list[dict] = field(default_factory=list)  # {"path", "tokens"}
    generated_tokens: int = 0


def builtin_train_text() -> str:
    return resources.files("edgepack").joinpath("data/train.txt").read_text(encoding="utf-8")


def check_files(paths: list[Path]) -> None:
    """Fail early, before any model is loaded, on a data file that is missing."""
    for path in paths:
        if not Path(path).is_file():
            raise EdgepackError(
                f"training text {path} does not exist; pass existing text files with --data "
                "(or none, for the built-in training text)"
            )


def _chunks(path: Path):
    """The file's text in pieces of about CHUNK_CHARS characters, each ending at a line break."""
    try:
        with open(path, encoding="utf-8") as fh:
            rest = ""
            while piece := fh.read(CHUNK_CHARS):
                piece = rest + piece
                cut = piece.rfind("\n") + 1
                if cut == 0:  # no line break yet: keep reading (bounded by the file)
                    rest = piece
                    continue
                rest = piece[cut:]
                yield piece[:cut]
            if rest:
                yield rest
    except UnicodeDecodeError as exc:
        raise EdgepackError(
            f"training text {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "convert it to UTF-8 or leave it out"
        ) from None
    except OSError as exc:
        raise EdgepackError(f"cannot read the training text {path}: {exc.strerror}") from None


def tokenize_file(tokenizer, path: Path | None) -> np.ndarray:
    """All token ids of a file (None: the built-in training text), chunk by chunk."""
    pieces = [builtin_train_text()] if path is None else _chunks(path)
    arrays = [
        np.asarray(
            tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int32
        )
        for p in pieces
        if p.strip()
    ]
    if not arrays:
        raise EdgepackError(f"training text {path} is empty; give a file with text in it")
    return np.concatenate(arrays)


def _windows(ids: np.ndarray, seq_len: int) -> np.ndarray:
    n = len(ids) // seq_len
    return ids[: n * seq_len].reshape(n, seq_len)


def load_text(tokenizer, paths: list[Path], seq_len: int) -> TrainingText:
    """Tokenize the files (or the built-in text), window them and hold out the last 10 %."""
    eos = tokenizer.eos_token_id
    parts, files = [], []
    for path in paths or [None]:
        ids = tokenize_file(tokenizer, path)
        files.append({"path": str(path) if path else "built-in train.txt", "tokens": len(ids)})
        parts.append(ids)
        if eos is not None:
            parts.append(np.asarray([eos], dtype=np.int32))
    windows = _windows(np.concatenate(parts), seq_len)
    total = sum(f["tokens"] for f in files)
    if len(windows) < 2:
        raise EdgepackError(
            f"the training text has {total} tokens, fewer than two windows of --seq-len "
            f"{seq_len} (one to train on, one held out); give more text with --data, or a "
            "smaller --seq-len"
        )
    held = max(1, round(len(windows) * HELD_OUT_SHARE))
    return TrainingText(windows[:-held], windows[-held:], files)


def add_generated(text: TrainingText, tokenizer, generated: str) -> TrainingText:
    """Teacher-generated text as extra training windows (never held out)."""
    extra = np.asarray(
        tokenizer(generated, add_special_tokens=False, verbose=False)["input_ids"], np.int32
    )
    windows = _windows(extra, text.train.shape[1])
    return TrainingText(
        np.concatenate([windows, text.train]), text.held_out, text.files, len(extra)
    )


def generate_text(model, tokenizer, n_tokens: int, seed: int = 0, batch: int = 8) -> str:
    """About n_tokens of text sampled from the teacher, answering GENERATE_PROMPTS in turn."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    texts, made, turn = [], 0, 0
    while made < n_tokens:
        prompts = [GENERATE_PROMPTS[(turn + i) % len(GENERATE_PROMPTS)] for i in range(batch)]
        turn += batch
        if tokenizer.chat_template:
            prompts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **enc.to(device),
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                max_new_tokens=min(256, -(-(n_tokens - made) // batch) + 16),
                pad_token_id=tokenizer.pad_token_id,
            )
        prompt_len = enc["input_ids"].shape[1]
        for prompt, row in zip(prompts, out[:, prompt_len:].tolist(), strict=True):
            if tokenizer.eos_token_id in row:  # what follows it is padding
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            made += len(row)
            texts.append(prompt + tokenizer.decode(row, skip_special_tokens=False))
    return "\n\n".join(texts) + "\n"
