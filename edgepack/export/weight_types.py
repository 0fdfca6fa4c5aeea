"""Every weight matrix's stored type, read back from the exported files.

What the manifest records per tensor (details["weight_types"]: name -> type) and per type
(details["weight_type_params"]: type -> parameters), so that a size follows from its parts:
- GGUF: each tensor's ggml type (gguf-py's reader, no weights loaded);
- OpenVINO IR: each compressed weight constant's element type with its group size (u4/g64,
  u8, ...), and float matrices left uncompressed, read from the IR's XML;
- ONNX: each MatMulNBits / GatherBlockQuantized node's bits and block size, and float
  initializers of MatMul / Gather nodes (the graph without its external data).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

_INT_TYPES = {"u4", "i4", "u8", "i8", "nf4", "u2", "u1"}


def gguf_types(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (ggml type, elements) of every tensor in a GGUF."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {t.name: (t.tensor_type.name.lower(), int(t.n_elements)) for t in reader.tensors}


def openvino_types(xml: Path) -> dict[str, tuple[str, int]]:
    """name -> (type, elements) of every weight matrix of an OpenVINO IR: integer constants
    with a group axis or per-channel rows (zero points and scales have a last axis of 1)."""
    out = {}
    for layer in ET.parse(xml).getroot().iter("layer"):
        if layer.get("type") != "Const":
            continue
        data = layer.find("data")
        if data is None:
            continue
        kind = data.get("element_type", "")
        shape = [int(d) for d in (data.get("shape") or "").split(",") if d.strip()]
        if len(shape) < 2 or shape[-1] <= 1 or min(shape) < 1:
            continue
        if kind in _INT_TYPES:
            name = kind if len(shape) == 2 else f"{kind}/g{shape[-1]}"
        elif kind in ("f16", "f32", "bf16") and len(shape) == 2 and shape[0] > 1:
            name = kind
        else:
            continue
        out[layer.get("name", "")] = (name, math.prod(shape))
    return out


def onnx_types(path: Path) -> dict[str, tuple[str, int]]:
    """node name -> (type, elements) of every quantized weight node of an ONNX graph, and of
    the float initializers that MatMul / Gather nodes read."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {i.name: list(i.dims) for i in graph.initializer}
    kinds = {
        i.name: onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name for i in graph.initializer
    }
    out = {}
    for node in graph.node:
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type == "MatMulNBits":
            elements = attrs.get("K", 0) * attrs.get("N", 0)
            out[node.name] = (f"int{attrs.get('bits', 4)}/b{attrs.get('block_size', 0)}", elements)
        elif node.op_type == "GatherBlockQuantized":
            shape = dims.get(node.input[0], [])
            elements = math.prod(shape) * (2 if attrs.get("bits", 4) == 4 else 1)
            out[node.name] = (f"int{attrs.get('bits', 4)}/b{attrs.get('block_size', 0)}", elements)
        elif node.op_type in ("MatMul", "Gather", "Gemm"):
            for name in node.input:
                if len(dims.get(name, [])) == 2:
                    out[node.name] = (kinds[name], math.prod(dims[name]))
    return out


def summary(types: dict[str, tuple[str, int]]) -> dict:
    """The details an export records: every tensor's type and the parameters of each type."""
    params: Counter = Counter()
    for kind, elements in types.values():
        params[kind] += elements
    return {
        "weight_types": {name: kind for name, (kind, _) in sorted(types.items())},
        "weight_type_params": dict(params.most_common()),
    }
