"""ONNX Runtime's data-free weight quantizers on the fp32 base export (edgepack.export.onnx's
fp16, int8, int4 and int4_mixed; its module docstring says what each does and what it measured).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ExportError
from ..model.facts import ModelFacts
from .base import Progress
from .registry import Precision

BLOCK_SIZES = (128, 64, 32)
# MatMulNBits accuracy_level per weight bits: 4 = int8 compute, 0 = fp32 compute (the
# measurements behind it: edgepack.export.onnx's docstring)
ACCURACY_LEVEL = {8: 4, 4: 0}


def block_size(*dims: int) -> int:
    """The largest of 128, 64, 32 that divides every MatMul input dimension (32 if none does:
    MatMulNBits then pads the last block)."""
    for size in BLOCK_SIZES:
        if all(d % size == 0 for d in dims):
            return size
    return BLOCK_SIZES[-1]


def convert_data_free(
    base_model: Path, facts: ModelFacts, precision: Precision, progress: Progress
):
    import onnx

    name = precision.name
    if name == "fp32":
        progress("loading the fp32 export")
        return onnx.load(str(base_model)), {"quantization": None}
    if name == "fp16":
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        progress("converting weights and activations to fp16 (onnxruntime float16 converter)")
        model = convert_float_to_float16(str(base_model), keep_io_types=False)
        return model, {
            "quantization": "onnxruntime.transformers.float16.convert_float_to_float16",
            "keep_io_types": False,
            "fp32_op_types": sorted(DEFAULT_OP_BLOCK_LIST),
        }
    if name in ("int8", "int4", "int4_mixed"):
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        bits = 8 if name == "int8" else 4
        dims = (facts.hidden_size, facts.intermediate_size)
        if facts.kind == "decoder":
            dims += (facts.num_attention_heads * facts.head_dim,)
        size = block_size(*dims)
        model = onnx.load(str(base_model))
        kept = mixed_nodes(model, facts) if name == "int4_mixed" else []
        progress(f"quantizing MatMul weights to {bits} bits (MatMulNBits, block {size}, asym)")
        accuracy_level = ACCURACY_LEVEL[bits]
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=bits,
            block_size=size,
            is_symmetric=False,
            accuracy_level=accuracy_level or None,
            nodes_to_exclude=kept,
        )
        quantizer.process()
        model = quantizer.model.model
        details = {
            "quantization": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
            "algorithm": "DEFAULT (round to nearest)",
            "bits": bits,
            "block_size": size,
            "block_size_divides": list(dims),
            "symmetric": False,
            "accuracy_level": accuracy_level,
            "activations": "int8 per block at run time" if accuracy_level == 4 else "fp32",
        }
        if kept:
            progress(f"quantizing the {len(kept)} kept MatMuls to 8 bits (MatMulNBits)")
            second = MatMulNBitsQuantizer(
                model,
                bits=8,
                block_size=size,
                is_symmetric=False,
                accuracy_level=ACCURACY_LEVEL[8],
                nodes_to_include=kept,
            )
            second.process()
            model = second.model.model
            details["mixed"] = {
                "bits": 8,
                "accuracy_level": ACCURACY_LEVEL[8],
                "nodes": len(kept),
                "rule": "first and last block, and every MatMul reading intermediate_size",
            }
        return model, details
    raise ExportError(f"format onnx has no precision {name}")


def mixed_nodes(model, facts: ModelFacts) -> list[str]:
    """int4_mixed's 8-bit MatMuls: those of the first and the last block, and those whose
    weight reads intermediate_size (the MLP output projection: down_proj, fc2, output.dense)."""
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    layer = re.compile(r"layers?[./_](\d+)[./]")
    edges = {0, facts.num_layers - 1}
    kept = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        found = layer.search(node.name)
        in_edge = found is not None and int(found.group(1)) in edges
        if in_edge or weights[node.input[1]][0] == facts.intermediate_size:
            kept.append(node.name)
    return kept
