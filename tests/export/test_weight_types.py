"""Every weight's stored type read back from exported files (unit: a small IR's XML, a GGUF
written with gguf-py, an ONNX graph) and the size figures of a build's table."""

import numpy as np
import pytest

from edgepack.export import weight_types as wt
from edgepack.export.base import is_weight_file, size_figures

IR = """<?xml version="1.0"?>
<net name="m" version="11"><layers>
<layer id="0" name="self.model.embed_tokens.weight" type="Const" version="opset1">
  <data element_type="u8" shape="49152, 576" offset="0" size="1"/></layer>
<layer id="1" name="self.model.embed_tokens.weight/zero_point" type="Const" version="opset1">
  <data element_type="u8" shape="49152, 1" offset="0" size="1"/></layer>
<layer id="2" name="self.model.layers.0.mlp.up_proj.weight" type="Const" version="opset1">
  <data element_type="u4" shape="1536, 18, 32" offset="0" size="1"/></layer>
<layer id="3" name="self.model.layers.0.mlp.up_proj.weight/scale" type="Const" version="opset1">
  <data element_type="f16" shape="1536, 18, 1" offset="0" size="1"/></layer>
<layer id="4" name="self.model.norm.weight" type="Const" version="opset1">
  <data element_type="f32" shape="1, 1, 576" offset="0" size="1"/></layer>
<layer id="5" name="input_ids" type="Parameter" version="opset1">
  <data element_type="i64" shape="?,?"/></layer>
</layers></net>
"""


def test_openvino_weights_and_their_groups_from_the_ir(tmp_path):
    (tmp_path / "m.xml").write_text(IR)
    types = wt.openvino_types(tmp_path / "m.xml")
    assert types == {
        "self.model.embed_tokens.weight": ("u8", 49152 * 576),
        "self.model.layers.0.mlp.up_proj.weight": ("u4/g32", 1536 * 576),
    }  # zero points, scales and norms are not weights
    summary = wt.summary(types)
    assert summary["weight_type_params"] == {"u8": 49152 * 576, "u4/g32": 1536 * 576}


def test_gguf_tensor_types(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert wt.gguf_types(tmp_path / "m.gguf") == {
        "token_embd.weight": ("f16", 256),
        "output_norm.weight": ("f32", 32),
    }


def test_onnx_quantized_and_float_weights(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    nbits = helper.make_node(
        "MatMulNBits",
        ["x", "w", "s"],
        ["y"],
        name="/lm_head/MatMul",
        domain="com.microsoft",
        K=64,
        N=128,
        bits=4,
        block_size=32,
    )
    gather = helper.make_node("Gather", ["table", "ids"], ["e"], name="/embed/Gather")
    table = helper.make_tensor("table", TensorProto.FLOAT, [10, 64], np.zeros(640).tolist())
    graph = helper.make_graph(
        [gather, nbits],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[table],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    assert wt.onnx_types(tmp_path / "model.onnx") == {
        "/lm_head/MatMul": ("int4/b32", 64 * 128),
        "/embed/Gather": ("float32", 640),
    }


@pytest.mark.parametrize(
    "name, weight",
    [
        ("model.gguf", True),
        ("openvino_model.bin", True),
        ("openvino_model.xml", True),
        ("model.onnx.data", True),
        ("openvino_tokenizer.bin", False),
        ("tokenizer.json", False),
        ("config.json", False),
    ],
)
def test_weight_files(name, weight):
    assert is_weight_file(f"model/{name}") is weight


def test_size_figures_against_fp32():
    # the default model: 134,515,008 parameters; q4_1 with a q5_1 embedding wrote 89,515,040 B
    figures = size_figures(89_515_040, 134_515_008)
    assert figures["bits_per_weight"] == pytest.approx(5.324, abs=0.001)
    assert figures["smaller_than_fp32"] == pytest.approx(0.8336, abs=0.0001)
    assert size_figures(4 * 1000, 1000)["smaller_than_fp32"] == 0
