"""ONNX for onnxruntime-genai: its model builder, run through the kit's onnxruntime-genai
runner and validated against the PyTorch fp32 reference; bundles built and checked."""

import dataclasses
import json

import pytest

from edgepack.bundle.kit import load_runner
from edgepack.errors import ExportError, UnsupportedModelError, ValidationError
from edgepack.export.registry import FORMATS
from edgepack.measure.validate import validate
from tests.conftest import run_cli

GENAI = FORMATS["onnx-genai"]
PRECISIONS = [p.name for p in GENAI.precisions]
FILES = {
    "model.onnx",
    "model.onnx.data",
    "genai_config.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
}
# on the 135M default model, round-to-nearest int4 with the head in its shared 4-bit matrix
# keeps 0.82 of the reference's WikiText-2 retention and agrees on the top-1 token at 0.76 of
# the confident positions: validation refuses it (int4_mixed is the 4-bit row that passes)
REFUSED = {"int4": "top-1 agreement"}


def test_check_refuses_an_encoder_and_an_unknown_architecture(default_model, encoder_model):
    from edgepack.export.onnx_genai import check
    from edgepack.export.support import inspect_model

    with pytest.raises((UnsupportedModelError, ExportError)):
        check(inspect_model(encoder_model), GENAI.precision("fp32"))
    facts = dataclasses.replace(
        inspect_model(default_model), model_type="mamba", architecture="MambaForCausalLM"
    )
    with pytest.raises(UnsupportedModelError, match="mamba"):
        check(facts, GENAI.precision("int8"))


def test_support_reads_the_builders_architectures():
    from edgepack.export.onnx_genai import builder_architectures

    names = builder_architectures()
    assert {"LlamaForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"} <= set(names)
    assert "BertModel" not in names


@pytest.mark.integration
@pytest.mark.parametrize("precision", PRECISIONS)
def test_decoder_export_validates(precision, default_model, exports, references):
    artifact = exports.get(default_model, "onnx-genai", precision)
    assert FILES <= {p.name for p in artifact.files()}
    ops = artifact.details["operators"]
    bits = GENAI.precision(precision).bits
    if bits == 8:
        assert ops.get("MatMulNBits8", 0) > 100 and "MatMulNBits4" not in ops
    elif bits == 4:
        assert ops.get("MatMulNBits4", 0) > 0
    runner = load_runner("onnxruntime-genai", artifact.path, threads=2)
    assert runner.kind == "decoder" and runner.version() == "0.15.2"
    if precision in REFUSED:
        with pytest.raises(ValidationError, match=REFUSED[precision]):
            validate(runner, references(default_model), bits)
        return
    figures = validate(runner, references(default_model), bits)
    ids = runner.tokenize("The capital of France is")
    gen = runner.generate(ids, 8)
    assert "Paris" in runner.detokenize(gen.tokens)
    print(f"\nonnx-genai {precision}: {figures} {gen.decode_tokens_per_s:.1f} tok/s")


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["int8", "int4_mixed"])
def test_a_bundle_passes_the_gate_and_its_check(tmp_path, precision):
    out = tmp_path / "bundles"
    r = run_cli(
        "build", "--target", "edge-4gb", "--format", "onnx-genai", "--precision", precision,
        "--candidates", "1", "--eval-tokens", "1024", "--out", str(out), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    manifest = json.loads(open(f"{bundle['path']}/manifest.json").read())
    assert manifest["runtime"]["name"] == "onnxruntime-genai"
    assert any(x.startswith("onnxruntime-genai==") for x in manifest["runtime"]["requirements"])
    assert manifest["quality"]["retention"] >= 0.85  # edge-4gb's floor, judged by the gate
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]
