"""ONNX Runtime runner for the on-device kit: onnxruntime, numpy, tokenizers and devicekit only.

The model directory holds model.onnx (+ model.onnx_data) as exported by optimum: a decoder takes
input_ids, attention_mask, position_ids (when present) and past_key_values.N.key/value, and
returns logits and present.N.key/value; one model serves both the prompt (empty past) and every
following token. An encoder (feature-extraction) returns last_hidden_state.
"""

from __future__ import annotations

import os

import devicekit
import numpy as np

MODEL_FILE = "model.onnx"
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet"}
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class Runner:
    runtime = "onnxruntime"

    def __init__(self, model_dir: str, threads: int | None = None):
        import onnxruntime as ort

        self.model_dir = str(model_dir)
        config_path = os.path.join(self.model_dir, "config.json")
        self.config = devicekit.read_json(config_path) if os.path.exists(config_path) else {}
        options = ort.SessionOptions()
        self.threads = int(threads or devicekit.default_threads())
        options.intra_op_num_threads = self.threads
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(
            os.path.join(self.model_dir, MODEL_FILE), sess_options=options, providers=providers
        )
        self.providers = self.session.get_providers()
        self.device = "gpu" if "CUDAExecutionProvider" in self.providers else "cpu"
        self.device_note = "" if self.device == "gpu" else (
            f"onnxruntime {ort.__version__} here offers {', '.join(self.providers)}: "
            "no CUDAExecutionProvider"
        )
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.tokenizer = devicekit.HFTokenizer(self.model_dir)
        if self.config.get("model_type") in ENCODER_TYPES or (
            not self.config and "logits" not in self.outputs
        ):
            self.kind = "encoder"
            if "last_hidden_state" not in self.outputs:
                raise ValueError(f"{MODEL_FILE} has no last_hidden_state output: {self.outputs}")
        else:
            self.kind = "decoder"
            if "logits" not in self.outputs:
                raise ValueError(f"{MODEL_FILE} has no logits output: {self.outputs}")
            self._init_cache()
        self.eos = devicekit.eos_token_ids(self.model_dir)
        self.start = devicekit.leading_ids(self.tokenizer.encode)

    # -- shared -------------------------------------------------------------------------------
    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))

    # -- decoder ------------------------------------------------------------------------------
    def _init_cache(self) -> None:
        """Names, dtype and empty shape of the KV-cache inputs, from the graph and config.json."""
        self.past_names = [n for n in self.inputs if n.startswith("past_key_values.")]
        self.present_for = {
            name: "present." + name.removeprefix("past_key_values.") for name in self.past_names
        }
        missing = [p for p in self.present_for.values() if p not in self.outputs]
        if missing:
            raise ValueError(f"{MODEL_FILE} lacks the KV-cache outputs {missing[:4]}")
        cfg = self.config
        heads = cfg.get("num_attention_heads")
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads else None)
        self.empty_past = {}
        for name in self.past_names:
            node = self.inputs[name]
            dims = list(node.shape)  # [batch, kv_heads, past_len, head_dim], symbolic or static
            shape = [
                1,
                dims[1] if isinstance(dims[1], int) else kv_heads,
                0,
                dims[3] if isinstance(dims[3], int) else head_dim,
            ]
            if not all(isinstance(d, int) for d in shape):
                raise ValueError(f"cannot size the KV cache input {name}: {dims}, config {cfg}")
            self.empty_past[name] = np.zeros(shape, dtype=_NUMPY_TYPES[node.type])
        self.logit_outputs = ["logits"]
        self.step_outputs = ["logits", *self.present_for.values()]

    def _feeds(self, ids: list[int], past_len: int) -> dict:
        n = len(ids)
        feeds = {"input_ids": np.asarray([ids], dtype=np.int64)}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((1, past_len + n), dtype=np.int64)
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(past_len, past_len + n, dtype=np.int64)[None, :]
        return feeds

    def logits(self, ids: list[int]) -> np.ndarray:
        feeds = self._feeds(self.start + list(ids), 0) | self.empty_past
        (logits,) = self.session.run(self.logit_outputs, feeds)
        return np.asarray(logits[0, len(self.start) :], dtype=np.float32)

    def generate(self, ids: list[int], max_new_tokens: int, stop_at_eos: bool = True):
        state = {"past": self.empty_past, "length": 0}

        def step(tokens: list[int], first: bool) -> np.ndarray:
            if first:
                state["past"], state["length"] = self.empty_past, 0
            feeds = self._feeds(tokens, state["length"]) | state["past"]
            outputs = self.session.run(self.step_outputs, feeds)
            state["past"] = dict(zip(self.past_names, outputs[1:], strict=True))
            state["length"] += len(tokens)
            return np.asarray(outputs[0][0, -1], dtype=np.float32)

        prompt = self.start + list(ids)
        return devicekit.greedy(step, prompt, max_new_tokens, self.eos if stop_at_eos else set())

    # -- encoder ------------------------------------------------------------------------------
    def embed(self, texts: list[str]) -> np.ndarray:
        if self.kind != "encoder":
            raise ValueError("embed() needs an encoder model")
        ids, mask = self.tokenizer.encode_batch(list(texts))
        feeds = {"input_ids": ids}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = mask
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return devicekit.mean_pool(np.asarray(hidden, dtype=np.float32), mask)
