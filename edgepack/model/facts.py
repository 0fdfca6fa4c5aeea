"""Model facts from config.json and the safetensors headers, without loading any weights.

A directory that holds only config.json is enough to plan: the parameter count is then computed
from the config. Weights are untrusted input: safetensors headers are parsed defensively, pickle
checkpoints are refused unless the user allows them, and custom model code is never run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ModelError
from . import safetensors_header
from .config import count_from_config, shape_from_config
from .safetensors_header import SAFETENSORS_DTYPES
from .weight_grid import weight_grid

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_EMBED = re.compile(r"(embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$")
_HEAD = re.compile(r"(^|\.)(lm_head|embed_out)\.weight$")
_LAYER = re.compile(r"\.(layers|h|layer|blocks)\.\d+\.")
_EXPERT = re.compile(r"\.experts\.")  # routed experts (a shared_expert is not one)

# float32 weights above this: the references run in bfloat16 (what that costs is measured in
# edgepack.measure.reference_model, which loads them; the planner predicts the build's memory)
FP32_REFERENCE_MAX_BYTES = 2 * 10**9


def reference_dtype(num_parameters: int) -> str:
    """The dtype a model's PyTorch references run in: "float32", or "bfloat16" where its
    float32 weights would exceed FP32_REFERENCE_MAX_BYTES (a 0.5B model)."""
    return "float32" if 4 * num_parameters <= FP32_REFERENCE_MAX_BYTES else "bfloat16"


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
    num_experts: int = 0  # routed experts per MoE layer; 0 for a dense model
    experts_per_token: int = 0  # experts each token is routed to
    expert_parameters: int = 0  # all routed experts of all layers (part of layer_parameters)
    sliding_window: int = 0  # tokens a sliding-window layer attends to; 0 when none
    sliding_layers: int = 0  # layers that attend within the window
    unsupported: tuple[tuple[str, str], ...] = ()  # (format, why it does not support the model)
    # (bits, share of the weights) of the quantization grids the weights already lie on (a
    # dequantized quantized checkpoint: edgepack.model.weight_grid); empty when continuous
    weight_grid: tuple[tuple[int, float], ...] = ()

    @property
    def active_parameters(self) -> int:
        """Parameters each token computes with: all but the experts it is not routed to."""
        if not self.num_experts:
            return self.num_parameters
        idle = self.expert_parameters * (1 - self.experts_per_token / self.num_experts)
        return int(self.num_parameters - idle)

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
        data["unsupported"] = dict(self.unsupported)
        data["weight_grid"] = {str(bits): share for bits, share in self.weight_grid}
        data["other_parameters"] = self.other_parameters
        data["active_parameters"] = self.active_parameters
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelFacts:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["formats"] = tuple(fields["formats"])
        fields["unsupported"] = tuple(dict(fields.get("unsupported") or {}).items())
        grid = dict(fields.get("weight_grid") or {})
        fields["weight_grid"] = tuple((int(bits), share) for bits, share in grid.items())
        return cls(**fields)


def read_facts(
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
    shape = shape_from_config(config, config_path)

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
        counts = count_from_config(shape, config)
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")

    disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    grid = weight_grid(root)["shares"] if safetensors_files else {}
    return ModelFacts(
        path=str(root.resolve()),
        parameters_source=source,
        dtype=dtype,
        disk_bytes=disk,
        weights=weights,
        formats=(),  # the exporters' word: edgepack.support.inspect_model fills both
        unsupported=(),
        remote_code=remote_code,
        weight_grid=tuple((bits, share) for bits, share in grid.items() if bits and share >= 0.01),
        **shape,
        **counts,
    )


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
            if _EXPERT.search(name):
                counts["expert"] += n
        elif _EMBED.search(name):
            counts["embedding"] += n
        elif _HEAD.search(name):
            counts["head"] += n
        else:
            counts["other"] += n
    return {
        "num_parameters": counts["layer"] + counts["embedding"] + counts["head"] + counts["other"],
        "embedding_parameters": counts["embedding"],
        "head_parameters": counts["head"],
        "layer_parameters": counts["layer"],
        "expert_parameters": counts["expert"],
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
    return {
        name: (SAFETENSORS_DTYPES[t.dtype][0], t.shape)
        for name, t in safetensors_header.read(file).items()
    }


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
