"""Model facts from config.json and the safetensors headers, without loading any weights.

A directory that holds only config.json is enough to plan: the parameter count is then computed
from the config. Weights are untrusted input: safetensors headers are parsed defensively, pickle
checkpoints are refused unless the user allows them, and custom model code is never run.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ModelError, UnsupportedModelError
from .formats.registry import DECODERS, ENCODERS, formats_for

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
MAX_HEADER_BYTES = 100_000_000
SAFETENSORS_DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
_EMBED = re.compile(r"(embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$")
_HEAD = re.compile(r"(^|\.)(lm_head|embed_out)\.weight$")
_LAYER = re.compile(r"\.(layers|h|layer|blocks)\.\d+\.")


@dataclass(frozen=True)
class ModelFacts:
    path: str | None
    architecture: str
    model_type: str
    kind: str  # "decoder" or "encoder"
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    num_parameters: int
    embedding_parameters: int  # token embedding
    head_parameters: int  # untied output head; 0 when tied
    layer_parameters: int  # all transformer blocks together
    parameters_source: str  # "safetensors", "pickle" or "config"
    dtype: str
    disk_bytes: int
    weights: str  # "safetensors", "pickle" or "none"
    formats: tuple[str, ...]
    remote_code: bool = False

    @property
    def other_parameters(self) -> int:
        return (
            self.num_parameters
            - self.embedding_parameters
            - self.head_parameters
            - self.layer_parameters
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["formats"] = list(self.formats)
        data["other_parameters"] = self.other_parameters
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelFacts:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["formats"] = tuple(fields["formats"])
        return cls(**fields)


def inspect_model(
    path: str | Path, allow_pickle: bool = False, trust_remote_code: bool = False
) -> ModelFacts:
    root = Path(path)
    if not root.is_dir():
        raise ModelError(f"model directory {root} does not exist")
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ModelError(
            f"{root} has no config.json: give a Hugging Face model directory "
            "(config.json plus safetensors weights, or config.json alone to plan)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} must hold a JSON object")
    remote_code = "auto_map" in config
    if remote_code and not trust_remote_code:
        raise ModelError(
            f"{root} needs its own Python code (config.json has auto_map); edgepack runs it only "
            "with --trust-remote-code, after you have read that code"
        )
    shape = _shape_from_config(config, config_path)

    safetensors_files = sorted(root.glob("*.safetensors"))
    pickle_files = sorted(p for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if safetensors_files:
        tensors = {}
        for file in safetensors_files:
            tensors.update(read_safetensors_header(file))
        weights, source = "safetensors", "safetensors"
    elif pickle_files:
        if not allow_pickle:
            raise ModelError(
                f"{root} holds only pickle checkpoints ({pickle_files[0].name}), which can run "
                "code when loaded; convert them to safetensors, or pass --allow-pickle to read "
                "them with torch.load(weights_only=True)"
            )
        tensors = {}
        for file in pickle_files:
            tensors.update(_read_pickle_shapes(file))
        weights, source = "pickle", "pickle"
    else:
        tensors, weights, source = None, "none", "config"

    if tensors is not None:
        counts = _count_from_tensors(tensors)
        dtype = _dominant_dtype(tensors)
    else:
        counts = _count_from_config(shape, config)
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")

    disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return ModelFacts(
        path=str(root.resolve()),
        parameters_source=source,
        dtype=dtype,
        disk_bytes=disk,
        weights=weights,
        formats=tuple(formats_for(shape["model_type"])),
        remote_code=remote_code,
        **shape,
        **counts,
    )


def _shape_from_config(config: dict, where: Path) -> dict:
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ModelError(f"{where} has no model_type")
    archs = config.get("architectures") or []
    architecture = archs[0] if archs and isinstance(archs[0], str) else model_type

    def pick(*keys, default=None):
        for key in keys:
            value = config.get(key)
            if value is not None:
                return value
        if default is not None:
            return default
        raise ModelError(f"{where} lacks {keys[0]}, which edgepack needs to size the model")

    hidden = pick("hidden_size", "n_embd", "d_model", "dim")
    heads = pick("num_attention_heads", "n_head", "n_heads")
    if model_type in ENCODERS or not (
        architecture.endswith("ForCausalLM") or model_type in DECODERS
    ):
        kind = "encoder" if model_type in ENCODERS else "unknown"
    else:
        kind = "decoder"
    shape = {
        "architecture": architecture,
        "model_type": model_type,
        "kind": kind,
        "num_layers": pick("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
        "hidden_size": hidden,
        "intermediate_size": pick("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
        or 4 * hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": pick("num_key_value_heads", "num_kv_heads", default=heads),
        "head_dim": pick("head_dim", default=hidden // heads) or hidden // heads,
        "vocab_size": pick("vocab_size"),
        "max_position_embeddings": pick("max_position_embeddings", "n_positions", default=0),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", kind != "encoder")),
    }
    for key, value in shape.items():
        if key in ("architecture", "model_type", "kind", "tie_word_embeddings"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ModelError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    if kind == "unknown":
        raise UnsupportedModelError(
            f"{architecture} (model_type {model_type}) is not a model edgepack can package; "
            f"supported model types: {', '.join(sorted(DECODERS | ENCODERS))}"
        )
    if model_type == "gpt2":
        shape["tie_word_embeddings"] = True  # GPT-2's head is its token embedding
    elif model_type in ENCODERS:
        shape["tie_word_embeddings"] = False  # encoders export without a language-model head
    return shape


def _count_from_config(shape: dict, config: dict) -> dict:
    """Parameter count of a standard transformer from its config (no weights present)."""
    h, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    q_dim = shape["num_attention_heads"] * shape["head_dim"]
    kv_dim = shape["num_key_value_heads"] * shape["head_dim"]
    model_type = shape["model_type"]
    embedding = vocab * h
    if model_type in ENCODERS or model_type == "gpt2":
        # biased q/k/v/o and a two-matrix MLP, two LayerNorms with bias
        attention = 4 * (h * h + h)
        mlp = h * inter + inter + inter * h + h
        layer = attention + mlp + 4 * h
        other = config.get("max_position_embeddings", config.get("n_positions", 0)) * h
        if model_type in ENCODERS:
            other += config.get("type_vocab_size", 0) * h + 2 * h + h * h + h  # LN + pooler
        else:
            other += 2 * h
    else:
        bias = (q_dim + 2 * kv_dim) if model_type == "qwen2" or config.get("attention_bias") else 0
        attention = h * q_dim + 2 * h * kv_dim + q_dim * h + bias
        mlp = 3 * h * inter  # gated MLP: gate, up, down
        norms = 2 * h
        if model_type == "qwen3":
            norms += 2 * shape["head_dim"]  # q_norm and k_norm
        layer = attention + mlp + norms
        other = h  # final norm
    head = 0 if shape["tie_word_embeddings"] else vocab * h
    layers = layer * shape["num_layers"]
    return {
        "num_parameters": embedding + head + layers + other,
        "embedding_parameters": embedding,
        "head_parameters": head,
        "layer_parameters": layers,
    }


def _count_from_tensors(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> dict:
    counts = Counter()
    for name, (dtype, dims) in tensors.items():
        if not dtype.startswith(("float", "bfloat")):
            continue  # integer buffers such as position_ids are not parameters
        n = 1
        for d in dims:
            n *= d
        if _LAYER.search(name):
            counts["layer"] += n
        elif _EMBED.search(name):
            counts["embedding"] += n
        elif _HEAD.search(name):
            counts["head"] += n
        else:
            counts["other"] += n
    return {
        "num_parameters": sum(counts.values()),
        "embedding_parameters": counts["embedding"],
        "head_parameters": counts["head"],
        "layer_parameters": counts["layer"],
    }


def _dominant_dtype(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> str:
    weight = Counter()
    for dtype, dims in tensors.values():
        n = 1
        for d in dims:
            n *= d
        weight[dtype] += n
    return weight.most_common(1)[0][0] if weight else "unknown"


def read_safetensors_header(file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} from a safetensors header, checked against the file size."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ModelError(f"{file} is truncated: no safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length == 0 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise ModelError(
                f"{file} has a malformed safetensors header (declares {length} bytes, file has "
                f"{size}); re-download or re-save the weights"
            )
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{file} has a malformed safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{file} has a malformed safetensors header (not an object)")
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, item = SAFETENSORS_DTYPES[entry["dtype"]]
            dims = tuple(int(d) for d in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{file}: tensor {name!r} has a malformed header entry") from None
        n = 1
        for d in dims:
            n *= d
        if (
            any(d < 0 for d in dims)
            or not 0 <= start <= end <= data_size
            or end - start != n * item
        ):
            raise ModelError(
                f"{file}: tensor {name!r} points outside the file or has the wrong size; "
                "the file is truncated or corrupt"
            )
        tensors[name] = (dtype, dims)
    return tensors


def _read_pickle_shapes(file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Shapes from a pickle checkpoint, read with torch.load(weights_only=True) only."""
    import torch  # only on this opt-in path

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user-input problem
        raise ModelError(f"{file} cannot be read as a weights-only checkpoint: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{file} does not hold a state dict of tensors")
    return {
        name: (str(t.dtype).removeprefix("torch."), tuple(t.shape))
        for name, t in state.items()
        if isinstance(t, torch.Tensor)
    }
