"""ONNX format: optimum export + ONNX Runtime quantization, run through the kit's ONNX Runtime
runner and validated against the PyTorch fp32 reference."""

import dataclasses
import shutil

import pytest

from edgepack.bundle.kit import load_runner
from edgepack.errors import UnsupportedModelError, ValidationError
from edgepack.export.onnx_quantize import block_size
from edgepack.export.registry import FORMATS
from edgepack.measure.validate import validate

ONNX = FORMATS["onnx"]
PRECISIONS = [p.name for p in ONNX.precisions]
DECODER_FILES = {
    "model.onnx",
    "model.onnx_data",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def chat_prompt(model_dir) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)


def test_block_size_divides_the_matmul_inputs():
    assert block_size(576, 1536, 576) == 64  # SmolLM2-135M: 576 = 4.5 x 128
    assert block_size(4096, 11008, 4096) == 128  # Llama-2-7B
    assert block_size(896, 4864, 896) == 128  # Qwen2.5-0.5B
    assert block_size(384, 1536) == 128  # all-MiniLM-L6-v2
    assert block_size(2080, 5632) == 32  # 2080 = 65 x 32
    assert block_size(100, 300) == 32  # nothing divides: MatMulNBits pads the last block


def test_check_refuses_an_architecture_onnx_cannot_export(default_model):
    from edgepack.export.onnx import check
    from edgepack.export.support import inspect_model

    facts = dataclasses.replace(
        inspect_model(default_model), model_type="mamba", architecture="MambaForCausalLM"
    )
    with pytest.raises(UnsupportedModelError, match="mamba"):
        check(facts, ONNX.precision("int8"))


@pytest.mark.integration
@pytest.mark.parametrize("precision", PRECISIONS)
def test_decoder_export_validates(precision, default_model, exports, references):
    artifact = exports.get(default_model, "onnx", precision)
    bits = ONNX.precision(precision).bits
    assert {p.name for p in artifact.files()} == DECODER_FILES
    details = artifact.details
    assert details["task"] == "text-generation-with-past"
    assert details["versions"]["onnxruntime"] and details["opset"] >= 14
    if bits < 16:
        assert details["block_size"] == 64 and details["bits"] == bits
        # the tied embedding: its Gather and the head's MatMul on its Transpose stay fp32
        assert any("embed_tokens" in n for n in details["float_weight_nodes"])
        assert any("lm_head" in n for n in details["float_weight_nodes"])

    runner = load_runner("onnxruntime", artifact.path, threads=2)
    assert runner.kind == "decoder" and runner.version()
    figures = validate(runner, references(default_model), bits)

    gen = runner.generate(runner.tokenize(chat_prompt(artifact.path)), 24)
    answer = runner.detokenize(gen.tokens)
    print(
        f"\nonnx {precision}: {figures} size={artifact.size_bytes() / 1e6:.1f} MB "
        f"export={details['export_s']}s (base {details['base_export_s']}s, reused "
        f"{details['base_reused']}) decode={gen.decode_tokens_per_s:.1f} tok/s "
        f"first_token={gen.first_token_s * 1000:.0f} ms answer={answer!r}"
    )
    if precision in ("fp32", "fp16", "int8"):
        assert "Paris" in answer


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_artifact_loads_in_optimum_ortmodel(precision, default_model, exports):
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    artifact = exports.get(default_model, "onnx", precision)
    model = ORTModelForCausalLM.from_pretrained(artifact.path)
    tok = AutoTokenizer.from_pretrained(artifact.path)
    inputs = tok(chat_prompt(artifact.path), return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.integration
def test_perturbed_weight_fails_validation(default_model, exports, references, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    artifact = exports.get(default_model, "onnx", "fp32")
    for f in artifact.files():
        if f.name not in ("model.onnx", "model.onnx_data"):
            shutil.copyfile(f, tmp_path / f.name)
    model = onnx.load(str(artifact.path / "model.onnx"))
    (norm,) = [t for t in model.graph.initializer if t.name == "model.norm.weight"]
    scaled = numpy_helper.to_array(norm) * np.float32(1000)
    norm.CopyFrom(numpy_helper.from_array(scaled, norm.name))
    onnx.save_model(
        model,
        str(tmp_path / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx_data",
    )
    del model
    runner = load_runner("onnxruntime", tmp_path)
    with pytest.raises(ValidationError, match="logits"):
        validate(runner, references(default_model), 32)


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_encoder_export_validates(precision, encoder_model, exports, references):
    artifact = exports.get(encoder_model, "onnx", precision)
    assert artifact.kind == "encoder" and artifact.details["task"] == "feature-extraction"
    names = {p.name for p in artifact.files()}
    assert {"model.onnx", "model.onnx_data", "config.json", "tokenizer.json"} <= names
    runner = load_runner("onnxruntime", artifact.path, threads=2)
    assert runner.kind == "encoder"
    figures = validate(runner, references(encoder_model), ONNX.precision(precision).bits)
    print(
        f"\nonnx encoder {precision}: {figures} size={artifact.size_bytes() / 1e6:.1f} MB "
        f"export={artifact.details['export_s']}s"
    )
