"""`edgepack prune`: width pruning by activation importance. Unit: bad input is one line and
exit 2 before any model is loaded. Integration, on a tiny random Llama: the pruned model equals
the original with the removed channels and heads silenced, it heals by distillation
(`distill --student`), and the healed model builds into a bundle that passes its check."""

import json
from pathlib import Path

import pytest

from tests.conftest import config_dir, run_cli
from tests.tiny import make_tiny


@pytest.mark.parametrize(
    "args, says",
    [
        (["--ratio", "1.5"], "--ratio 1.5 is out of range"),
        (["--ratio", "-0.1"], "--ratio -0.1 is out of range"),
        (["--kv-groups", "0"], "keep at least 1 group"),
        (["--hidden-ratio", "1"], "--hidden-ratio 1.0 is out of range"),
        (
            ["--model", str(config_dir("gemma-3-270m")), "--hidden-ratio", "0.25"],
            "scales its embeddings by sqrt(hidden_size)",
        ),
        (["--model", "/nonexistent"], "is not a model directory"),
        (["--model", str(config_dir("mixtral-8x7b"))], "not 'mixtral'"),
    ],
)
def test_bad_input_is_one_line_before_any_model_is_loaded(tmp_path, args, says):
    r = run_cli("prune", "--out", str(tmp_path / "out"), *args)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, default_model):
    return make_tiny("llama", tmp_path_factory.mktemp("prune") / "teacher", default_model)


@pytest.mark.integration
def test_pruned_model_is_the_original_with_the_cut_parts_silenced(tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned"
    r = run_cli("prune", "--model", str(tiny), "--out", str(out), "--ratio", "0.5",
                "--kv-groups", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["intermediate_size"] == {"before": 128, "after": 64}
    assert report["kv_groups"] == {"before": 2, "after": 1}
    assert report["parameters"]["after"] < report["parameters"]["before"]
    assert json.loads((out / "prune_report.json").read_text()) == report
    config = json.loads((out / "config.json").read_text())
    assert (config["intermediate_size"], config["num_key_value_heads"]) == (64, 1)
    assert (config["num_attention_heads"], config["head_dim"]) == (2, 16)
    assert (out / "tokenizer.json").is_file()

    original = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():  # silence what was cut: its columns of down_proj and o_proj
        for row, layer in zip(report["layers"], original.model.layers, strict=True):
            kept = torch.zeros(128, dtype=torch.bool)
            kept[_kept_channels(layer, pruned.model.layers[row["layer"]])] = True
            layer.mlp.down_proj.weight[:, ~kept] = 0
            cut = [g for g in range(2) if g not in row["kv_groups_kept"]]
            for g in cut:  # two query heads of 16 dimensions per group
                layer.self_attn.o_proj.weight[:, g * 32 : (g + 1) * 32] = 0
    ids = torch.tensor([[5, 17, 300, 42, 7, 99, 1000, 3]])
    with torch.no_grad():
        want, got = original(ids).logits, pruned(ids).logits
    assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()


def _kept_channels(full, cut) -> list[int]:
    """Which of the full layer's MLP channels the pruned layer kept (rows of up_proj)."""
    rows = [tuple(r.tolist()) for r in full.mlp.up_proj.weight]
    return [rows.index(tuple(r.tolist())) for r in cut.mlp.up_proj.weight]


@pytest.mark.integration
def test_prune_heal_build_passes_its_check(tiny, tmp_path):
    pruned, healed = tmp_path / "pruned", tmp_path / "healed"
    r = run_cli("prune", "--model", str(tiny), "--out", str(pruned), "--ratio", "0.25")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "heal it with `edgepack distill" in r.stderr
    r = run_cli("distill", "--teacher", str(tiny), "--student", str(pruned), "--out", str(healed),
                "--steps", "2", "--seq-len", "32", "--batch", "2", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["student"]["given"] == str(pruned.resolve())
    assert report["student"]["kept_layers"] is None and "--student" in report["command"]
    # what pruning removed travels with the healed student
    assert report["student"]["pruned"]["ratio"] == 0.25
    assert report["student"]["pruned"]["intermediate_size"] == {"before": 128, "after": 96}
    assert json.loads((healed / "config.json").read_text())["intermediate_size"] == 96
    # the pruned model builds; the healed one would too, but 2 steps leave a random tiny
    # model's predictions too flat for validation's top-1 agreement at 8 bits
    out = tmp_path / "bundles"
    r = run_cli("build", "--model", str(pruned), "--target", "edge-4gb", "--format", "gguf",
                "--precision", "q8_0", "--candidates", "1", "--eval-tokens", "256",
                "--out", str(out), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]


@pytest.mark.integration
def test_a_given_student_must_share_the_vocabulary(tmp_path, tiny):
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((tiny / "config.json").read_text()) | {"vocab_size": 7}
    (other / "config.json").write_text(json.dumps(config))
    (other / "model.safetensors").write_bytes(b"")
    r = run_cli("distill", "--teacher", str(tiny), "--student", str(other),
                "--out", str(tmp_path / "o"))  # fmt: skip
    assert r.returncode == 2 and "share its teacher's tokenizer" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def narrowed(tiny, tmp_path_factory):
    """The tiny Llama with a quarter of its MLP channels, one of its two key/value groups and a
    quarter of its hidden size cut: its head_dim (16) is no longer hidden_size /
    num_attention_heads (48 / 2)."""
    out = tmp_path_factory.mktemp("pruned-kv") / "pruned"
    r = run_cli("prune", "--model", str(tiny), "--out", str(out), "--ratio", "0.25",
                "--kv-groups", "1", "--hidden-ratio", "0.25", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["hidden_size"]["before"] == 64 and report["hidden_size"]["after"] == 48
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["head_dim"], config["num_attention_heads"]) == (48, 16, 2)
    return out


@pytest.mark.integration
@pytest.mark.parametrize(
    "fmt, precision",
    [("gguf", "f16"), ("openvino", "fp16"), ("onnx", "fp32"), ("onnx-genai", "fp32")],
)
def test_every_exporter_takes_a_narrowed_model(narrowed, tmp_path, fmt, precision):
    out = tmp_path / "bundles"
    r = run_cli("build", "--model", str(narrowed), "--target", "edge-4gb", "--format", fmt,
                "--precision", precision, "--candidates", "1", "--eval-tokens", "256",
                "--no-resolve", "--out", str(out), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]
    assert manifest["source_model"]["num_parameters"] == 4_755_696
