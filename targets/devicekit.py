"""The on-device kit's shared pieces: stdlib and numpy only.

Every bundle carries this directory. A runner module per runtime (run_llamacpp, run_openvino,
run_onnxruntime) exposes `Runner(model_dir, threads=None)` with:

    runtime                             "llama.cpp" | "openvino" | "onnxruntime"
    kind                                "decoder" | "encoder"
    version() -> str                    the runtime package's version
    tokenize(text) -> list[int]         no special tokens added (markup in the text is parsed)
    detokenize(ids) -> str
    logits(ids) -> np.ndarray           [len(ids), vocab] float32 next-token logits, fresh context
    generate(ids, max_new_tokens, stop_at_eos=True) -> Generation   greedy, timed
    embed(texts) -> np.ndarray          encoders: [len(texts), hidden] sentence embeddings

None of it imports edgepack, torch or transformers: it must run where those cannot.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

RUNNERS = {
    "llama.cpp": "run_llamacpp",
    "openvino": "run_openvino",
    "onnxruntime": "run_onnxruntime",
}


@dataclass
class Generation:
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    first_token_s: float = 0.0  # prompt processing up to the first new token
    token_s: list[float] = field(default_factory=list)  # each following token

    @property
    def decode_tokens_per_s(self) -> float:
        total = sum(self.token_s)
        return len(self.token_s) / total if total > 0 else 0.0


def load_runner(runtime: str, model_dir: str, threads: int | None = None):
    if runtime not in RUNNERS:
        raise ValueError(f"unknown runtime {runtime!r}; runtimes: {', '.join(RUNNERS)}")
    module = importlib.import_module(RUNNERS[runtime])
    return module.Runner(model_dir, threads=threads)


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def eos_token_ids(model_dir: str) -> set[int]:
    """End-of-sequence ids from generation_config.json, else config.json."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            value = read_json(path).get("eos_token_id")
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(v for v in value if isinstance(v, int))
            if ids:
                break
    return ids


def greedy(step, prompt: list[int], max_new_tokens: int, eos: set[int]) -> Generation:
    """Greedy decoding around `step(ids, first) -> last-position logits` with timings."""
    gen = Generation(prompt_tokens=len(prompt))
    start = time.perf_counter()
    logits = step(prompt, True)
    token = int(np.argmax(logits))
    gen.first_token_s = time.perf_counter() - start
    gen.tokens.append(token)
    while len(gen.tokens) < max_new_tokens and not (eos and token in eos):
        start = time.perf_counter()
        logits = step([token], False)
        token = int(np.argmax(logits))
        gen.token_s.append(time.perf_counter() - start)
        gen.tokens.append(token)
    return gen


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors under the attention mask (sentence-transformers pooling)."""
    mask = mask.astype(np.float32)[..., None]
    return (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)


class HFTokenizer:
    """A tokenizer.json through the `tokenizers` package (no transformers)."""

    def __init__(self, model_dir: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # some tokenizer.json files (all-MiniLM's) pad or truncate every text to a fixed length;
        # transformers applies those only when asked, so neither does the kit
        self._tok.no_padding()
        self._tok.no_truncation()

    def encode(self, text: str, special: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=special).ids

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Padded ids and attention mask for an encoder, with its special tokens."""
        encodings = [self._tok.encode(t, add_special_tokens=True) for t in texts]
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)
