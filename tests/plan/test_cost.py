"""What a deployment costs per million generated tokens, single stream and served."""

from __future__ import annotations

import pytest

from edgepack.device.profiles import load_profile, parse_profile
from edgepack.errors import ProfileError
from edgepack.export.support import inspect_model
from edgepack.plan.cost import at_decode, cost_text, per_million
from edgepack.plan.planner import GB, plan
from tests.conftest import config_dir


def chosen(model: str, target: str):
    return plan(inspect_model(config_dir(model)), load_profile(target)).chosen


@pytest.mark.parametrize("target", ["t4", "xeon"])
def test_priced_profiles_give_cost_per_million_tokens(target):
    c = chosen("smollm2-135m", target)
    cost, p = c.cost, c.predicted
    profile = load_profile(target)
    assert cost["hourly_usd"] == profile.cost.hourly_usd and "aws.amazon.com" in cost["source"]
    single = profile.cost.hourly_usd / (p.decode_tokens_per_s * 3600) * 1e6
    assert cost["single_stream_usd_per_million"] == pytest.approx(single, rel=1e-3)
    # served: more streams at once, each still at the decode budget, cost less per token
    assert cost["streams"] == p.streams > 1
    assert p.streams_tokens_per_s / p.streams >= profile.budget.decode_tokens_per_s
    assert cost["served_usd_per_million"] < cost["single_stream_usd_per_million"]
    assert "per million tokens with one stream" in cost_text(cost)


def test_served_streams_are_bound_by_memory_for_a_7b_model_on_a_t4():
    c = chosen("llama-2-7b", "t4")
    p, budget = c.predicted, load_profile("t4").budget
    assert 1 < p.streams < 64  # every stream's KV cache in VRAM: far fewer than the cap
    assert p.memory_bytes + (p.streams - 1) * p.kv_cache_bytes <= budget.accelerator_memory_gb * GB
    assert p.memory_bytes + p.streams * p.kv_cache_bytes > budget.accelerator_memory_gb * GB
    assert p.decode_tokens_per_s < p.streams_tokens_per_s < p.streams * p.decode_tokens_per_s


def test_unpriced_profiles_have_no_cost_and_a_price_must_be_positive(t4_raw):
    assert chosen("smollm2-135m", "edge-4gb").cost is None
    t4_raw["cost"]["hourly_usd"] = -1
    with pytest.raises(ProfileError, match="hourly_usd"):
        parse_profile(t4_raw, source="test")


def test_a_refined_decode_rescales_the_cost():
    c = chosen("smollm2-135m", "t4").cost
    planned = 100.0
    half = at_decode(c, planned, planned / 2)
    assert half["single_stream_usd_per_million"] == pytest.approx(
        2 * c["single_stream_usd_per_million"], rel=1e-3
    )
    assert at_decode(c, None, 5.0) == c
    assert per_million(3.6, 1000.0) == pytest.approx(1.0)


def test_a_builds_row_carries_the_cost_at_the_devices_refined_decode():
    from edgepack.build.selection import Trial

    c = chosen("smollm2-135m", "t4")
    device = c.predicted.decode_tokens_per_s / 2
    trial = Trial(c, {"retention": 0.99}, None, {}, {}, device_prediction={
        "decode_tokens_per_s": device})  # fmt: skip
    row_cost = trial.row(chosen=True)["cost"]
    assert row_cost["single_stream_usd_per_million"] == pytest.approx(
        2 * c.cost["single_stream_usd_per_million"], rel=1e-3
    )
    assert Trial(c, {"retention": 0.99}, None, {}, {}).row(True)["cost"] == c.cost
