"""llama.cpp runner (llama-cpp-python) for a GGUF artifact: `<model_dir>/model.gguf`.

Standalone: stdlib, numpy, llama_cpp and devicekit only (see devicekit's docstring for the
interface). Tokenization is llama.cpp's own, from the tokenizer inside the GGUF.

The context is opened without `logits_all`: keeping every position's logits made the first
token of a 128-token prompt ~50% slower and the process ~80 MB larger on the default model.
`logits()` asks for all positions' logits itself, through llama.cpp's batch API, on the same
context.

On a GPU, `gpu_layers` layers are offloaded (-1: all). `cpu_moe_layers` keeps the expert tensors
of the first N layers in host RAM, as llama.cpp's `--n-cpu-moe N` does: a tensor buffer-type
override (`blk.I.ffn_*_exps` -> the CPU buffer type) for each of those layers, set in the model
parameters llama-cpp-python does not expose. The tensors llama.cpp reports as overridden while
loading are kept in `host_tensors`.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import devicekit
import numpy as np

MODEL_FILE = "model.gguf"
CONTEXT_TOKENS = 2048  # decoders: KV cache size, bounded by the model's trained context
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "nomic_bert"})
ENCODER_ARCHS = frozenset({"bert", "nomic-bert", "jina-bert-v2", "modern-bert", "neo-bert"})
EXPERT_TENSORS = r"blk\.{layer}\.ffn_(up|down|gate|gate_up)_exps"  # llama.cpp's --n-cpu-moe


class Runner:
    runtime = "llama.cpp"

    def __init__(
        self,
        model_dir: str,
        threads: int | None = None,
        n_ctx: int | None = None,
        kv_cache: str | None = None,
        gpu_layers: int | None = None,
        cpu_moe_layers: int | None = None,
    ):
        import llama_cpp

        self._lib = llama_cpp
        self.kv_cache = kv_cache  # a KV-cache type (q8_0) instead of llama.cpp's f16
        self.gpu_layers = gpu_layers
        self.cpu_moe_layers = int(cpu_moe_layers or 0)
        self.host_tensors: list[str] = []  # tensors held in host RAM by cpu_moe_layers
        self.model_dir = str(model_dir)
        self.path = os.path.join(self.model_dir, MODEL_FILE)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path} not found: not a GGUF artifact directory")
        config = self._config()
        self.kind = _kind(config)
        self.threads = int(threads or devicekit.default_threads())
        trained = config.get("max_position_embeddings") or 0
        if self.kind == "encoder":
            n_ctx = min(n_ctx or 512, trained or 512, 512)  # one input at a time
        else:
            n_ctx = n_ctx or (min(CONTEXT_TOKENS, trained) if trained else CONTEXT_TOKENS)
        self._llm = self._open(n_ctx, embedding=self.kind == "encoder")
        if not config and self.kind == "decoder":
            arch = self._llm.metadata.get("general.architecture", "")
            if arch in ENCODER_ARCHS:  # no config.json beside the GGUF: ask the GGUF
                self._llm.close()
                self.kind = "encoder"
                self._llm = self._open(min(n_ctx, 512), embedding=True)
        self.n_ctx = self._llm.n_ctx()
        # where the model runs: on a GPU only with layers to offload and a GPU backend built in
        self.device, self.device_note = "cpu", ""
        if self.gpu_layers:
            if llama_cpp.llama_supports_gpu_offload():
                self.device = "gpu"
            else:
                self.device_note = (
                    f"llama-cpp-python {llama_cpp.__version__} here has no GPU backend "
                    "(llama_supports_gpu_offload() is false)"
                )
        self.start = devicekit.leading_ids(
            lambda text, special: self._llm.tokenize(text.encode(), add_bos=special, special=False)
        )
        self.n_vocab = self._llm.n_vocab()
        self._eos = devicekit.eos_token_ids(self.model_dir) or {self._llm.token_eos()}

    def _config(self) -> dict:
        path = os.path.join(self.model_dir, "config.json")
        return devicekit.read_json(path) if os.path.exists(path) else {}

    def _open(self, n_ctx: int, embedding: bool):
        # every allowed core for the prompt and for decoding (llama-cpp-python's default
        # n_threads is half the machine's cores: 45 against 77 tok/s on a 2-core host)
        kwargs = {"n_threads": self.threads, "n_threads_batch": self.threads}
        # sliding-window layers (Gemma 2/3) keep only their window: with llama.cpp's default
        # full-size SWA cache they would hold the whole context like global layers
        kwargs["swa_full"] = False
        if self.kv_cache:  # a quantized V cache needs flash attention
            kind = getattr(self._lib, f"GGML_TYPE_{self.kv_cache.upper()}")
            kwargs |= {"type_k": kind, "type_v": kind, "flash_attn": True}
        if embedding:  # the whole input must be one micro-batch for bidirectional attention
            kwargs |= {"n_batch": n_ctx, "n_ubatch": n_ctx}
        if self.gpu_layers is not None:
            kwargs["n_gpu_layers"] = int(self.gpu_layers)
        else:
            # On a CPU the weights are read into memory, not mapped: the CPU backend repacks
            # Q4_0 and Q4_K tensors into an interleaved copy, and with the file mapped both stay
            # resident (llama.cpp issues 12149 and 16761). The default model's Q4_0 GGUF held
            # 222 MB mapped and 164 MB read, the 57 MiB of its repacked blocks once.
            kwargs["use_mmap"] = False
        with _experts_in_host_ram(self._lib, self.cpu_moe_layers) as overridden:
            llm = self._lib.Llama(
                model_path=self.path, n_ctx=n_ctx, embedding=embedding, verbose=False, **kwargs
            )
        if self.cpu_moe_layers and not overridden:
            llm.close()
            raise ValueError(
                f"cpu_moe_layers {self.cpu_moe_layers}: llama.cpp kept no tensor in host RAM "
                "(this GGUF has no blk.N.ffn_*_exps expert tensors)"
            )
        self.host_tensors = overridden
        return llm

    def version(self) -> str:
        return self._lib.__version__

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def detokenize(self, ids: list[int]) -> str:
        return self._llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    def logits(self, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab] float32 logits of every position, from an empty context."""
        self._require("decoder")
        ids = self.start + [int(i) for i in ids]
        if len(ids) > self.n_ctx:
            raise ValueError(f"{len(ids)} tokens do not fit the context of {self.n_ctx}")
        lib, llm = self._lib, self._llm
        out = np.empty((len(ids), self.n_vocab), dtype=np.float32)
        step = llm.n_batch
        batch = lib.llama_batch_init(step, 0, 1)
        try:
            self._clear()
            for start in range(0, len(ids), step):
                chunk = ids[start : start + step]
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i] = token
                    batch.pos[i] = start + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = 1
                code = lib.llama_decode(llm.ctx, batch)
                if code != 0:
                    raise RuntimeError(f"llama_decode failed with code {code}")
                rows = np.ctypeslib.as_array(
                    lib.llama_get_logits(llm.ctx), shape=(len(chunk) * self.n_vocab,)
                )
                out[start : start + len(chunk)] = rows.reshape(len(chunk), self.n_vocab)
        finally:
            lib.llama_batch_free(batch)
            self._clear()
        return out[len(self.start) :]

    def generate(
        self, ids: list[int], max_new_tokens: int, stop_at_eos: bool = True
    ) -> devicekit.Generation:
        self._require("decoder")
        prompt = self.start + [int(i) for i in ids]
        if len(prompt) + max_new_tokens > self.n_ctx:
            raise ValueError(
                f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the context of "
                f"{self.n_ctx}"
            )
        lib, llm = self._lib, self._llm

        def step(tokens: list[int], first: bool) -> np.ndarray:
            if first:
                self._clear()
            llm.eval(tokens)  # logits of the last position only
            ptr = lib.llama_get_logits_ith(llm.ctx, -1)
            return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

        return devicekit.greedy(step, prompt, max_new_tokens, self._eos if stop_at_eos else set())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings with the pooling the GGUF records (the sentence-transformers
        config the converter read), mean pooling where it records none."""
        self._require("encoder")
        lib, llm = self._lib, self._llm
        vectors = llm.embed(list(texts))
        if llm.pooling_type() == lib.LLAMA_POOLING_TYPE_NONE:
            vectors = [np.asarray(v, dtype=np.float32).mean(axis=0) for v in vectors]
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        self._llm.close()

    def _clear(self) -> None:
        """Empty the KV cache and llama-cpp-python's record of evaluated tokens."""
        self._llm.reset()
        memory = self._lib.llama_get_memory(self._llm.ctx)
        if memory is not None:
            self._lib.llama_memory_clear(memory, True)

    def _require(self, kind: str) -> None:
        if self.kind != kind:
            raise TypeError(f"this runner holds a {self.kind}; that call needs a {kind}")


class _Override(ctypes.Structure):  # struct llama_model_tensor_buft_override
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


class _experts_in_host_ram:
    """While a model loads: the expert tensors of layers 0..layers-1 in the CPU buffer type,
    and the names of the tensors llama.cpp reports as overridden (its load log)."""

    def __init__(self, lib, layers: int):
        self.lib, self.layers, self.names = lib, layers, []

    def __enter__(self) -> list[str]:
        if not self.layers:
            return self.names
        lib = self.lib
        base = ctypes.CDLL(str(Path(lib.__file__).parent / "lib" / "libggml-base.so"))
        base.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
        cpu = base.ggml_backend_cpu_buffer_type()
        patterns = [EXPERT_TENSORS.format(layer=i).encode() for i in range(self.layers)]
        if len(patterns) >= lib.llama_max_tensor_buft_overrides():
            raise ValueError(f"cpu_moe_layers {self.layers} exceeds llama.cpp's override limit")
        self._array = (_Override * (len(patterns) + 1))(
            *[_Override(p, cpu) for p in patterns], _Override(None, None)
        )
        self._defaults = lib.llama_cpp.llama_model_default_params

        def params():
            p = self._defaults()
            p.tensor_buft_overrides = ctypes.cast(self._array, ctypes.c_void_p)
            return p

        @lib.llama_log_callback
        def log(level, text, user_data):
            line = text.decode("utf-8", errors="replace")
            if "buffer type overridden" in line:
                self.names.append(line.split()[1])

        self._log = log  # kept alive while llama.cpp may call it
        lib.llama_cpp.llama_model_default_params = params
        lib.llama_log_set(log, ctypes.c_void_p(0))
        return self.names

    def __exit__(self, *exc) -> None:
        if not self.layers:
            return
        from llama_cpp import _logger

        self.lib.llama_cpp.llama_model_default_params = self._defaults
        self.lib.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def _kind(config: dict) -> str:
    if config.get("model_type") in ENCODER_TYPES:
        return "encoder"
    return "decoder"
