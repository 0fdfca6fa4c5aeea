"""tools/random_model.py and tools/build_memory.py's pieces: a random checkpoint written tensor
by tensor, and the stage a build's words begin."""

import importlib.util
import json

from edgepack.model.facts import read_facts
from tests.conftest import ROOT


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_random_checkpoint_has_the_shape_and_is_written_in_shards(tmp_path, monkeypatch):
    random_model = tool("random_model")
    monkeypatch.setattr(random_model, "SHARD_BYTES", 20_000_000)  # a few shards of the tiny one
    out = random_model.make("tiny", tmp_path / "m", log=lambda m: None)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == set(shards)
    facts = read_facts(out)
    hidden, layers, inter, heads, kv = random_model.SHAPES["tiny"]
    assert (facts.hidden_size, facts.num_layers, facts.intermediate_size) == (hidden, layers, inter)
    assert index["metadata"]["total_size"] == 2 * facts.num_parameters  # bf16
    assert sum((out / s).stat().st_size for s in shards) < 2.01 * facts.num_parameters
    assert (out / "tokenizer.json").is_file()
    again = random_model.make("tiny", tmp_path / "n", log=lambda m: None)
    assert all((out / s).read_bytes() == (again / s).read_bytes() for s in shards)  # seeded


def test_the_stage_is_what_the_build_last_said():
    stage_of = tool("build_memory").stage_of
    assert stage_of("converting random-1b to an f16 GGUF with llama.cpp's converter") == (
        "export: convert"
    )
    assert stage_of("computing llama.cpp's importance matrix on 32 calibration samples") == (
        "export: imatrix"
    )
    assert stage_of("quantizing to q4_k_m with llama.cpp (LLAMA_FTYPE_MOSTLY_Q4_K_M)") == (
        "export: quantize"
    )
    assert stage_of("exporting gguf q4_k_m") == "export"
    assert stage_of("validating against the fp32 reference") == "validate"
    assert stage_of("running the bundle's check.py on this host") == "check"
    assert stage_of("laptop: gguf q4_k_m: 5/6 ████     02:50 , done     ") == "publish"
    assert stage_of("laptop: gguf q4_k_m: 0/6") is None
