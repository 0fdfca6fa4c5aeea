"""The on-device kit's shared pieces: stdlib and numpy only.

Every bundle carries this directory. A runner module per runtime (run_llamacpp, run_openvino,
run_onnxruntime, run_onnxruntime_genai) exposes `Runner(model_dir, threads=None)` with:

    runtime                             "llama.cpp" | "openvino" | "onnxruntime"
                                        | "onnxruntime-genai"
    kind                                "decoder" | "encoder"
    threads                             the thread count it runs with (prompt and decode)
    version() -> str                    the runtime package's version
    tokenize(text) -> list[int]         no special tokens added (markup in the text is parsed)
    detokenize(ids) -> str
    start -> list[int]                  what the model's tokenizer puts before every text (its
                                        BOS: Gemma's <bos>), [] when nothing; a fresh context
                                        begins with it, in logits() and generate()
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
    "onnxruntime-genai": "run_onnxruntime_genai",
}


@dataclass
class Generation:
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    first_token_s: float = 0.0  # prompt processing up to the first new token
    token_s: list[float] = field(default_factory=list)  # each following token
    prompt_tokens_processed: int | None = None  # as the runtime reports it, where it does

    @property
    def decode_tokens_per_s(self) -> float:
        total = sum(self.token_s)
        return len(self.token_s) / total if total > 0 else 0.0


def leading_ids(encode) -> list[int]:
    """The ids a tokenizer adds before a text, from encode(text, special): [] when none."""
    plain, full = list(encode("a", False)), list(encode("a", True))
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i]
    return []


def default_threads() -> int:
    """Every core this process may run on (its CPU affinity, which containers and taskset
    narrow), not the machine's count; llama-cpp-python's own default is half of them."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_runner(runtime: str, model_dir: str, threads: int | None = None, **settings):
    """settings: the runtime settings a bundle's manifest records (runtime.settings), such as
    llama.cpp's kv_cache type."""
    if runtime not in RUNNERS:
        raise ValueError(f"unknown runtime {runtime!r}; runtimes: {', '.join(RUNNERS)}")
    module = importlib.import_module(RUNNERS[runtime])
    return module.Runner(model_dir, threads=threads, **settings)


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
    gen = Generation(prompt_tokens=len(prompt), prompt_tokens_processed=len(prompt))
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


# Words of ordinary English for cold prompts: each timed run gets a text the runtime has not seen.
PROMPT_WORDS = (
    "river mountain engineer device morning report signal battery window garden market "
    "station letter winter harbour silver planet kitchen forest bridge camera doctor island "
    "library museum orange pencil rocket school summer ticket valley village yellow answer "
    "bottle castle dinner energy farmer guitar hammer jacket ladder mirror number ocean "
    "pocket rabbit saddle tunnel umbrella velvet wagon basket candle desert feather lantern "
    "meadow needle paddle quartz ribbon shadow thunder violin whistle anchor blanket copper "
    "dragon engine fabric glacier harvest insect jungle kettle lemon magnet nickel orchard "
    "parrot quiet rapid sudden timber urgent vivid wander"
).split()


def cold_prompts(tokenize, count: int, length: int) -> list[list[int]]:
    """`count` prompts of exactly `length` token ids, pairwise different from their first token
    on: a runtime that reuses the KV cache of a repeated prefix (openvino-genai does) finds
    nothing to reuse, so every timed run pays for its whole prompt, as a new user's would."""
    import random

    prompts: list[list[int]] = []
    firsts: set[int] = set()
    seed = 0
    while len(prompts) < count:
        rng = random.Random(seed)
        seed += 1
        words = rng.sample(PROMPT_WORDS, len(PROMPT_WORDS))
        ids: list[int] = []
        while len(ids) < length:
            ids += tokenize(" ".join(words).capitalize() + ". ")
            rng.shuffle(words)
        ids = ids[:length]
        if ids[0] in firsts:  # same first token as an earlier prompt: draw another order
            if seed > 50 * count:
                raise RuntimeError("cannot make distinct prompts with this tokenizer")
            continue
        firsts.add(ids[0])
        prompts.append(ids)
    return prompts


# Golden outputs are checked teacher-forced: the model reads prompt + golden tokens once and
# every step's next-token logits are compared with the golden token recorded at build time.
# CLEAR_MARGIN: a step whose top-1 led the runner-up by at least this many logits at build
# time must keep the golden token as its argmax. Below it (a near-tie, common in small
# quantized models: 'La' 23.202 vs 'L' 23.156 on the capital question) the golden token only
# has to stay within NEAR_TIE logits of the top one: another CPU's kernels (NEON, AVX-512) sum
# in another order and move logits by a few hundredths, which flips such ties. A perturbed or
# wrong model moves logits by whole units and fails the clear steps.
CLEAR_MARGIN = 0.5
NEAR_TIE = 0.5


def golden_margins(logits: np.ndarray, prompt_len: int, tokens: list[int]) -> list[float]:
    """Build side: at each golden step, how far the top logit led the runner-up."""
    rows = np.asarray(logits, dtype=np.float32)[prompt_len - 1 : prompt_len - 1 + len(tokens)]
    top2 = np.sort(rows, axis=-1)[:, -2:]
    return [round(float(a - b), 4) for b, a in top2]


def golden_check(logits: np.ndarray, golden: dict) -> dict:
    """Device side: the teacher-forced verdict of one golden output.

    logits: [len(prompt_ids) + len(tokens), vocab] for prompt_ids + tokens. Each step is judged
    on its own, so a divergence at one tie cannot fail the steps after it."""
    prompt_len, tokens = len(golden["prompt_ids"]), list(golden["tokens"])
    margins = golden.get("margins") or [float("inf")] * len(tokens)
    rows = np.asarray(logits, dtype=np.float32)[prompt_len - 1 : prompt_len - 1 + len(tokens)]
    clear = ties = 0
    failures = []
    for step, (row, token, margin) in enumerate(zip(rows, tokens, margins, strict=True)):
        top = int(np.argmax(row))
        behind = float(row[top] - row[token])
        if margin >= CLEAR_MARGIN:
            clear += 1
            ok = top == token
        else:
            ties += 1
            ok = behind <= NEAR_TIE
        if not ok:
            failures.append({"step": step, "golden": token, "top": top, "behind": round(behind, 4)})
    return {
        "steps": len(tokens),
        "clear_steps": clear,
        "near_ties": ties,
        "failed_steps": failures,
        "pass": not failures and len(rows) == len(tokens),
    }


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
