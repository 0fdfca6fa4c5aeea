"""Every architecture edgepack claims, built in every format its exporter supports, and checked.

As optimum's test suite does for its exporters: a tiny random checkpoint per architecture
(tests/tiny.py), made at test time. The default model covers Llama at full size, Gemma-3-270M
gemma3_text (tests/model/test_gemma3.py), all-MiniLM-L6-v2 the BERT encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepack.export.support import inspect_model
from edgepack.model.config import DECODERS
from tests.conftest import run_cli
from tests.tiny import ARCHITECTURES, make_tiny

pytestmark = pytest.mark.integration

EIGHT_BIT = {"gguf": "q8_0", "openvino": "int8", "onnx": "int8", "onnx-genai": "int8"}
# what each exporter supports, as edgepack.export.support reads it from the exporters themselves
EXPECTED_FORMATS = {
    "llama": {"gguf", "openvino", "onnx", "onnx-genai"},
    "mistral": {"gguf", "openvino", "onnx", "onnx-genai"},
    "qwen2": {"gguf", "openvino", "onnx", "onnx-genai"},
    "qwen3": {"gguf", "openvino", "onnx", "onnx-genai"},
    "phi3": {"gguf", "openvino", "onnx"},
    "mixtral": {"gguf", "openvino"},  # optimum-onnx has no Mixtral export
    "qwen3_moe": {"gguf", "openvino", "onnx"},
}
CASES = [(arch, fmt) for arch, formats in EXPECTED_FORMATS.items() for fmt in sorted(formats)]
# llama.cpp's Phi-3 vocabulary is Llama 2's SentencePiece with a dummy prefix; the fixture's
# tokenizer (Gemma 3's, the one SentencePiece model on hand) has none, so llama.cpp splits
# words differently from the source tokenizer and validation must refuse the GGUF
REFUSED = {("phi3", "gguf"): "tokenization of 'Hello world'"}


def test_every_claimed_decoder_has_a_tiny_fixture_or_a_real_model():
    assert DECODERS == set(ARCHITECTURES) | {"gemma3_text"}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, default_model, gemma3_model):
    root = tmp_path_factory.mktemp("tiny")
    made = {}

    def get(model_type: str) -> Path:
        if model_type not in made:
            made[model_type] = make_tiny(model_type, root / model_type, default_model, gemma3_model)
        return made[model_type]

    return get


@pytest.mark.parametrize("model_type", EXPECTED_FORMATS)
def test_support_and_counts_of_the_tiny_checkpoint(tiny_models, model_type):
    facts = inspect_model(tiny_models(model_type))
    assert facts.model_type == model_type and facts.num_layers == 2
    assert set(facts.formats) == EXPECTED_FORMATS[model_type], dict(facts.unsupported)
    config = json.loads((tiny_models(model_type) / "config.json").read_text())
    from edgepack.model.config import count_from_config, shape_from_config

    counted = count_from_config(shape_from_config(config, "config.json"), config)
    assert counted["num_parameters"] == facts.num_parameters  # config arithmetic == headers
    assert counted["expert_parameters"] == facts.expert_parameters
    assert (facts.num_experts > 0) == (model_type in ("mixtral", "qwen3_moe"))


@pytest.mark.parametrize("model_type,fmt", CASES)
def test_tiny_checkpoint_builds_and_passes_its_check(tiny_models, tmp_path, model_type, fmt):
    out = tmp_path / "bundles"
    r = run_cli(
        "build", "--model", str(tiny_models(model_type)), "--target", "edge-4gb",
        "--out", str(out), "--format", fmt, "--precision", EIGHT_BIT[fmt],
        "--candidates", "1", "--eval-tokens", "256", "--json",
    )  # fmt: skip
    if (model_type, fmt) in REFUSED:
        assert r.returncode == 1 and REFUSED[model_type, fmt] in r.stderr, r.stderr[-2000:]
        assert not out.exists() or not any(out.iterdir())  # nothing half-written
        return
    assert r.returncode == 0, r.stderr[-2000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]


def test_a_format_the_exporter_lacks_is_refused_naming_it(tiny_models, tmp_path):
    r = run_cli(
        "build", "--model", str(tiny_models("mixtral")), "--target", "edge-4gb",
        "--out", str(tmp_path / "b"), "--format", "onnx", "--precision", "int8",
    )  # fmt: skip
    assert r.returncode == 2
    assert "optimum-onnx" in r.stderr and "no text-generation-with-past export" in r.stderr
    assert "formats that do: gguf, openvino" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()


def test_a_flat_model_builds_quantized_judged_by_its_logits(tmp_path, default_model):
    """A random Llama at transformers' default initialisation is confident nowhere: its 8-bit
    GGUF is judged by its logits against the reference's spread, and passes its check."""
    model = make_tiny("llama", tmp_path / "flat", default_model, init=0.02)
    r = run_cli(
        "build", "--model", str(model), "--target", "edge-4gb", "--out", str(tmp_path / "b"),
        "--format", "gguf", "--precision", "q8_0", "--candidates", "1", "--eval-tokens", "256",
        "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    figures = manifest["validation"]
    assert figures["confident_positions"] == 0 and figures["top1_agreement_confident"] is None
    assert figures["logits_relative_error"] < figures["logits_relative_error_ceiling"] == 0.15
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]
