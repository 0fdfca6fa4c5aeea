"""A mixture of experts on a GPU that misses VRAM: its experts of the first layers in host RAM.

The plan (llama.cpp's --n-cpu-moe: the fewest layers that fit VRAM, both memories shown, the
host's share of each token at the host's bandwidth), the runner's settings it leads to, and
llama.cpp keeping exactly those tensors in host RAM (integration, on a tiny Mixtral).
"""

import pytest

from edgepack.build.settings import runtime_settings
from edgepack.device.profiles import load_profile
from edgepack.export.registry import FORMATS
from edgepack.export.support import inspect_model
from edgepack.plan.planner import Plan, plan, predict
from tests.conftest import config_dir

GB = 1e9


@pytest.fixture(scope="module")
def qwen3_moe_on_t4():
    facts, t4 = inspect_model(config_dir("qwen3-30b-a3b")), load_profile("t4")
    return facts, t4, plan(facts, t4)


def test_the_plan_keeps_the_fewest_layers_experts_in_host_ram(qwen3_moe_on_t4):
    facts, t4, result = qwen3_moe_on_t4
    c = result.chosen
    assert c.format == "gguf" and c.device == "gpu" and c.cpu_moe_layers
    assert "experts of" in c.label
    p, budget = c.predicted, t4.budget
    assert p.memory_bytes <= budget.accelerator_memory_gb * GB
    assert p.host_memory_bytes <= budget.memory_gb * GB
    assert "VRAM" in c.reasons[0] and "host" in c.reasons[0]
    fmt = FORMATS[c.format]
    precision = fmt.precision(c.precision)

    def at(n):
        return predict(facts, t4, fmt, precision, c.student_layers, True, cpu_moe=n)

    fewer = at(c.cpu_moe_layers - 1)
    assert fewer.memory_bytes > budget.accelerator_memory_gb * GB  # one layer fewer misses
    whole = at(None)
    moved = whole.memory_bytes - p.memory_bytes
    assert moved == pytest.approx(p.host_memory_bytes - whole.host_memory_bytes, rel=1e-6)
    # experts of 15 of 48 layers: about that share of the expert matrices moved
    share = facts.expert_parameters / facts.layer_parameters
    expected = whole.weights_bytes * share * c.cpu_moe_layers / facts.num_layers
    assert moved == pytest.approx(expected, rel=0.1)
    # the host's reads slow each token down, and the prompt's copy to the GPU delays it
    assert p.decode_tokens_per_s < whole.decode_tokens_per_s
    assert p.decode_tokens_per_s > at(facts.num_layers).decode_tokens_per_s
    assert p.first_token_ms > whole.first_token_ms


def test_the_runner_settings_follow_the_plan(qwen3_moe_on_t4):
    _, _, result = qwen3_moe_on_t4
    c = result.chosen
    assert runtime_settings(c) == {"gpu_layers": -1, "cpu_moe_layers": c.cpu_moe_layers}
    again = Plan.from_dict(result.to_dict())
    assert again.chosen.cpu_moe_layers == c.cpu_moe_layers
    assert again.chosen.predicted.host_arithmetic == c.predicted.host_arithmetic


def test_no_expert_offload_where_the_whole_model_fits_or_there_are_no_experts():
    t4 = load_profile("t4")
    for name in ("qwen3-0.6b", "phi-3-mini-4k"):  # dense
        assert not any(
            c.cpu_moe_layers for c in plan(inspect_model(config_dir(name)), t4).candidates
        )
    facts = inspect_model(config_dir("qwen3-30b-a3b"))
    big = t4.model_copy(
        update={
            "accelerator": t4.accelerator.model_copy(update={"vram_gb": 80}),
            "budget": t4.budget.model_copy(update={"accelerator_memory_gb": 70}),
        }
    )
    for c in plan(facts, big).candidates:  # 70 GB holds every row on the GPU
        assert not c.cpu_moe_layers
        if c.device == "gpu" and c.format == "gguf":
            assert "vram" not in c.violations


def test_a_cpu_host_gets_no_expert_offload():
    facts = inspect_model(config_dir("mixtral-8x7b"))
    assert not any(c.cpu_moe_layers for c in plan(facts, load_profile("xeon")).candidates)


@pytest.mark.integration
def test_llamacpp_keeps_the_first_layers_experts_in_host_ram(tmp_path, default_model):
    """On this CPU-only host the CPU buffer type is where every tensor lives anyway; what is
    tested is that llama.cpp matched exactly the expert tensors of the layers asked for, and
    that a GGUF without experts is refused."""
    import numpy as np

    from edgepack.bundle.kit import load_runner
    from edgepack.export.gguf import convert
    from tests.tiny import make_tiny

    dirs = {}
    for arch in ("mixtral", "llama"):
        model = make_tiny(arch, tmp_path / arch, default_model)
        art = tmp_path / f"{arch}-gguf"
        art.mkdir()
        convert(model, art / "model.gguf", lambda *a, **k: None)
        (art / "config.json").write_text((model / "config.json").read_text())
        dirs[arch] = art
    offloaded = load_runner("llama.cpp", str(dirs["mixtral"]), cpu_moe_layers=1, gpu_layers=-1)
    assert sorted(offloaded.host_tensors) == [
        f"blk.0.ffn_{name}_exps.weight" for name in ("down", "gate", "up")
    ]
    plain = load_runner("llama.cpp", str(dirs["mixtral"]))
    assert plain.host_tensors == []
    ids = plain.tokenize("The capital of France is Paris, and")
    assert np.array_equal(offloaded.logits(ids), plain.logits(ids))
    both = load_runner("llama.cpp", str(dirs["mixtral"]), cpu_moe_layers=2)
    assert len(both.host_tensors) == 6
    with pytest.raises(ValueError, match="no tensor in host RAM"):
        load_runner("llama.cpp", str(dirs["llama"]), cpu_moe_layers=1)
