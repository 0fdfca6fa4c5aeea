"""OpenVINO runner for the on-device kit: openvino, openvino_genai, numpy, tokenizers, devicekit.

The model directory is an optimum-intel export: a decoder's openvino_model.xml is stateful (the KV
cache lives in the model's state variables; inputs input_ids, attention_mask, position_ids,
beam_idx; output logits), and openvino_tokenizer.xml / openvino_detokenizer.xml sit beside it for
openvino-genai. An encoder's IR returns last_hidden_state.

- logits(): the IR compiled by openvino.Core on the CPU, state reset, the whole input at once.
- generate(): openvino_genai.LLMPipeline, the runtime a device installs. Token ids go in and come
  out (no chat template, no tokenizer in the loop); the timings are genai's own per-token
  measurements: time to the first token, then the duration of every following token. Measured
  against stepping the compiled IR one token at a time through devicekit.greedy on the default
  model (2 threads): the same decode speed, and a first token 20-60 ms faster, as genai computes
  the output head for the last prompt position only.
- Both compile with INFERENCE_PRECISION_HINT=f32. The CPU plugin otherwise executes in bf16 where
  the hardware has it (AVX512-BF16, AMX), which moved the fp16 export's logits by up to 1.05 from
  the fp32 reference (0.04 in f32) and can change greedy outputs from one device to another.
  The rest stays the plugin's default (KV cache precision, dynamic quantization of activations
  for int8/int4 weights); `settings` records what was set and what the plugin chose.
- One compiled copy at a time: the CPU plugin keeps the IR's weights and its own repacked copy
  of them (about twice the IR's bytes: 350 MB for the default model's 138 MB int8 IR), and
  genai's pipeline compiles a second one, so logits() drops the pipeline and generate() the
  compiled IR before compiling their own (both together took a 1B int8 build's quality stage,
  which scores and then generates, from 3.53 to 5.39 GB). The IR read at start-up is dropped
  once its inputs are known; compiling reads the file again.
- Tokenization is the `tokenizers` package on tokenizer.json (devicekit.HFTokenizer), exactly
  the source model's tokenizer.
"""

from __future__ import annotations

import os

import devicekit
import numpy as np

MODEL_FILE = "openvino_model.xml"
DECODER_SUFFIXES = ("ForCausalLM", "LMHeadModel")
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
REPORTED = ("INFERENCE_PRECISION_HINT", "KV_CACHE_PRECISION", "DYNAMIC_QUANTIZATION_GROUP_SIZE")


class Runner:
    runtime = "openvino"

    def __init__(self, model_dir: str, threads: int | None = None):
        import openvino as ov

        self.model_dir = str(model_dir)
        self.core = ov.Core()
        self.model_file = os.path.join(self.model_dir, MODEL_FILE)
        model = self.core.read_model(self.model_file)
        self.inputs = {i.get_any_name() for i in model.inputs}
        self.outputs = {name for o in model.outputs for name in o.get_names()}
        self._stateful = bool(model.get_sinks())
        del model  # its weights stay mapped while it lives; compiling reads the file again
        self.threads = int(threads or devicekit.default_threads())
        self.config = dict(CONFIG) | {"INFERENCE_NUM_THREADS": self.threads}
        config_path = os.path.join(self.model_dir, "config.json")
        config = devicekit.read_json(config_path) if os.path.exists(config_path) else {}
        archs = config.get("architectures") or []
        if archs:
            decoder = any(str(a).endswith(DECODER_SUFFIXES) for a in archs)
        else:
            decoder = "logits" in self.outputs
        self.kind = "decoder" if decoder else "encoder"
        if decoder:
            missing = {"input_ids", "beam_idx"} - self.inputs
            if "logits" not in self.outputs or missing:
                raise ValueError(
                    f"{MODEL_FILE} is not a stateful decoder (inputs {sorted(self.inputs)}, "
                    f"outputs {sorted(self.outputs)}): export it with optimum-intel, stateful"
                )
            self.eos = devicekit.eos_token_ids(self.model_dir)
        elif "last_hidden_state" not in self.outputs:
            raise ValueError(f"{MODEL_FILE} has no last_hidden_state output: {self.outputs}")
        self.tokenizer = devicekit.HFTokenizer(self.model_dir)
        self.start = devicekit.leading_ids(self.tokenizer.encode)
        self.settings = {"compile": dict(self.config), "generate": None}
        self.device, self.device_note = "cpu", "the kit runs OpenVINO on its CPU plugin"
        self._compiled = None
        self._request = None
        self._pipeline = None

    # -- shared -------------------------------------------------------------------------------
    def version(self) -> str:
        import openvino

        return openvino.__version__

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def _infer_request(self):
        """The IR compiled on the CPU (on first use, and again after generate() has held the
        pipeline) and its infer request."""
        if self._request is None:
            self._pipeline = None  # one compiled copy of the weights at a time
            self._compiled = self.core.compile_model(self.model_file, "CPU", self.config)
            self._request = self._compiled.create_infer_request()
            self.settings["compiled"] = {k: str(self._compiled.get_property(k)) for k in REPORTED}
        return self._request

    # -- decoder ------------------------------------------------------------------------------
    @property
    def stateful(self) -> bool:
        """Whether the IR keeps its KV cache in state variables."""
        return self._stateful

    def logits(self, ids: list[int]) -> np.ndarray:
        if self.kind != "decoder":
            raise ValueError("logits() needs a decoder model")
        ids = self.start + list(ids)
        n = len(ids)
        request = self._infer_request()
        request.reset_state()
        feeds = {"input_ids": np.asarray([ids], dtype=np.int64)}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((1, n), dtype=np.int64)
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(n, dtype=np.int64)[None, :]
        feeds["beam_idx"] = np.zeros((1,), dtype=np.int32)
        request.infer(feeds)
        logits = request.get_tensor("logits").data
        return np.array(logits[0, len(self.start) :], dtype=np.float32)

    def _llm_pipeline(self):
        if self._pipeline is None:
            import openvino_genai as og

            self._request = self._compiled = None  # one compiled copy of the weights at a time
            self._pipeline = og.LLMPipeline(self.model_dir, "CPU", **self.config)
            self.settings["generate"] = f"openvino_genai.LLMPipeline {og.__version__}"
        return self._pipeline

    def generate(self, ids: list[int], max_new_tokens: int, stop_at_eos: bool = True):
        import openvino as ov
        import openvino_genai as og

        if self.kind != "decoder":
            raise ValueError("generate() needs a decoder model")
        pipeline = self._llm_pipeline()
        config = og.GenerationConfig()  # greedy: do_sample is off by default
        config.max_new_tokens = int(max_new_tokens)
        if self.eos:
            config.eos_token_id = min(self.eos)
            config.stop_token_ids = set(self.eos)
        config.ignore_eos = not stop_at_eos
        ids = self.start + list(ids)
        prompt = ov.Tensor(np.asarray([ids], dtype=np.int64))
        result = pipeline.generate(prompt, config)
        tokens = [int(t) for t in result.tokens[0]]
        raw = result.perf_metrics.raw_metrics
        # microseconds: the first token, then one duration per following token
        durations = [d / 1e6 for d in raw.m_durations]
        first = list(raw.m_times_to_first_token)
        if not tokens or len(first) != 1 or len(durations) != len(tokens) - 1:
            raise RuntimeError(
                f"openvino-genai reported {len(first)} first-token times and {len(durations)} "
                f"token durations for {len(tokens)} tokens; cannot time this generation"
            )
        return devicekit.Generation(
            prompt_tokens=len(ids),
            tokens=tokens,
            first_token_s=first[0] / 1e6,
            token_s=durations,
            # what genai says it fed the model: the whole prompt unless it reused a cached prefix
            prompt_tokens_processed=int(result.perf_metrics.get_num_input_tokens()),
        )

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
        request = self._infer_request()
        request.infer(feeds)
        hidden = np.asarray(request.get_tensor("last_hidden_state").data, dtype=np.float32)
        return devicekit.mean_pool(hidden, mask)
