"""ONNX static int8 (the int8_static precision): ONNX Runtime's quantize_static with
activation ranges calibrated on the calibration text, beside 8-bit MatMulNBits where a fixed
range cannot hold the activations."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import ExportError
from ..measure import calibration_text as cal
from ..model.facts import ModelFacts
from .base import Progress
from .onnx_quantize import ACCURACY_LEVEL, block_size

STATIC_SAMPLES = 16  # calibration windows of STATIC_TOKENS source tokens
STATIC_TOKENS = 128


def static_int8(base_model: Path, facts: ModelFacts, progress: Progress, model_dir, text: str):
    """Static int8: ONNX Runtime's quantize_static (QDQ, per-channel int8 weights, uint8
    activations with ranges calibrated on the text), then 8-bit MatMulNBits for the MatMuls
    reading intermediate_size, whose input outliers a fixed per-tensor range cannot hold."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    graph = onnx.load(str(base_model), load_external_data=False).graph
    names = [i.name for i in graph.input]
    weights = {init.name: list(init.dims) for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    rows = {  # weight MatMul -> its input dimension (rows of the [in, out] weight)
        n.name: weights[n.input[1]][0]
        for n in graph.node
        if n.op_type == "MatMul"
        and len(n.input) > 1
        and n.input[1] in weights
        and not outputs & set(n.output)  # an untied output head stays fp32
    }
    dynamic = [n for n, k in rows.items() if k == facts.intermediate_size]
    static = [n for n in rows if n not in dynamic]
    samples = cal.token_samples(model_dir, text, STATIC_SAMPLES, STATIC_TOKENS)

    class Reader(CalibrationDataReader):
        """The decoder's inputs for each sample: the prompt pass, with an empty KV cache."""

        def __init__(self):
            self.pending = iter(samples)

        def get_next(self):
            ids = next(self.pending, None)
            if ids is None:
                return None
            n = len(ids)
            feed = {
                "input_ids": np.asarray([ids], dtype=np.int64),
                "attention_mask": np.ones((1, n), dtype=np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None],
            }
            past = (1, facts.num_key_value_heads, 0, facts.head_dim)
            for name in names:
                if name.startswith("past_key_values"):
                    feed[name] = np.zeros(past, dtype=np.float32)
            missing = set(names) - set(feed)
            if missing:
                raise ExportError(f"no calibration input for {sorted(missing)}")
            return {k: v for k, v in feed.items() if k in names}

    progress(
        f"calibrating activation ranges on {len(samples)} samples of {STATIC_TOKENS} tokens and "
        f"quantizing {len(static)} MatMuls statically (quantize_static, QDQ)"
    )
    work = Path(tempfile.mkdtemp(prefix=".static-", dir=base_model.parent))
    try:
        quantize_static(
            str(base_model),
            str(work / base_model.name),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=static,
            per_channel=True,
            reduce_range=True,  # 7-bit weights: no int16 saturation on CPUs without VNNI
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=True,
        )
        model = onnx.load(str(work / base_model.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dims = (facts.hidden_size, facts.intermediate_size, facts.num_attention_heads * facts.head_dim)
    size = block_size(*dims)
    progress(f"quantizing the {len(dynamic)} MLP output projections to 8-bit MatMulNBits")
    second = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=size,
        is_symmetric=False,
        accuracy_level=ACCURACY_LEVEL[8],
        nodes_to_include=dynamic,
    )
    second.process()
    return second.model.model, {
        "quantization": "onnxruntime.quantization.quantize_static + MatMulNBitsQuantizer",
        "format": "QDQ",
        "bits": 8,
        "weights": "int8 symmetric per channel, in 7 bits (reduce_range)",
        "activations": "uint8 per tensor, static ranges (MinMax over the calibration samples)",
        "static_nodes": len(static),
        "dynamic_nodes": len(dynamic),
        "dynamic": "MatMuls reading intermediate_size: 8-bit MatMulNBits, activations "
        "quantized per block at run time",
        "block_size": size,
        "accuracy_level": ACCURACY_LEVEL[8],
        "calibration": {
            "used": True,
            **cal.describe(text),
            "samples": len(samples),
            "sample_tokens": STATIC_TOKENS,
            "method": "onnxruntime quantize_static, MinMax activation ranges",
        },
    }
