"""onnxruntime-genai runner for the on-device kit: onnxruntime_genai, numpy, tokenizers and
devicekit only.

The model directory is what onnxruntime-genai's model builder writes: model.onnx (+
model.onnx.data) and genai_config.json, beside the source's tokenizer and config files. The
model runs through `og.Model` and `og.Generator`: a generator per context, fed with
`append_tokens`, its logits read with `get_output("logits")` (every position of what was
appended: a prompt's whole window for logits(), the last position while decoding). Greedy
decoding is devicekit's over those logits, so the same argmax rule runs in every runtime.
Threads: genai_config.json's session options are overlaid with `intra_op_num_threads` (every
allowed core unless told), without touching the bundle's files.
Tokenization is the source's tokenizer.json through the `tokenizers` package, as for ONNX
Runtime, so that no special token is added behind the caller's back.
"""

from __future__ import annotations

import json
import os

import devicekit
import numpy as np

MODEL_FILE = "model.onnx"
GENAI_CONFIG = "genai_config.json"


class Runner:
    runtime = "onnxruntime-genai"

    def __init__(self, model_dir: str, threads: int | None = None, n_ctx: int | None = None):
        import onnxruntime_genai as og

        self._og = og
        self.model_dir = str(model_dir)
        path = os.path.join(self.model_dir, GENAI_CONFIG)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: not an onnxruntime-genai model directory")
        self.genai = devicekit.read_json(path)
        self.kind = "decoder"
        self.threads = int(threads or devicekit.default_threads())
        config = og.Config(self.model_dir)
        options = {"intra_op_num_threads": self.threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)
        trained = int(self.genai["model"].get("context_length") or 0)
        self.n_ctx = int(n_ctx or trained or 2048)
        self.n_vocab = int(self.genai["model"]["vocab_size"])
        self.tokenizer = devicekit.HFTokenizer(self.model_dir)
        self.eos = devicekit.eos_token_ids(self.model_dir)
        self.start = devicekit.leading_ids(self.tokenizer.encode)
        self.device, self.device_note = "cpu", "the kit runs onnxruntime-genai on its CPU provider"

    def version(self) -> str:
        return self._og.__version__

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def _generator(self, length: int):
        if length > self.n_ctx:
            raise ValueError(f"{length} tokens do not fit the context of {self.n_ctx}")
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=length, do_sample=False)
        return self._og.Generator(self.model, params)

    def _append(self, generator, ids: list[int]) -> np.ndarray:
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        return np.asarray(generator.get_output("logits"), dtype=np.float32)[0]

    def logits(self, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab] float32 logits of every position, from a fresh context."""
        ids = self.start + [int(i) for i in ids]
        generator = self._generator(len(ids) + 1)
        out = self._append(generator, ids)
        del generator
        return out[len(self.start) :]

    def generate(self, ids: list[int], max_new_tokens: int, stop_at_eos: bool = True):
        prompt = self.start + [int(i) for i in ids]
        state = {}

        def step(tokens: list[int], first: bool) -> np.ndarray:
            if first:  # a new generator: an empty KV cache of the prompt and its new tokens
                state["generator"] = self._generator(len(prompt) + max_new_tokens + 1)
            return self._append(state["generator"], tokens)[-1]

        gen = devicekit.greedy(step, prompt, max_new_tokens, self.eos if stop_at_eos else set())
        state.clear()
        return gen

    def close(self) -> None:
        self.model = None
