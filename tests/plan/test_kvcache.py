"""A smaller KV-cache type as a plan dimension: offered only where the default does not fit."""

import json
import re
from pathlib import Path

import pytest

from edgepack.device.profiles import parse_profile
from edgepack.export.registry import RUNTIMES
from edgepack.export.support import inspect_model
from edgepack.plan.planner import plan
from tests.conftest import PROFILES, config_dir, run_cli

SMOLLM = inspect_model(config_dir("smollm2-135m"))


def laptop(**budget) -> object:
    text = (PROFILES / "laptop.toml").read_text()
    for key, value in budget.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, flags=re.M)
    return parse_profile(text.encode(), source="test", is_json=False)


def test_a_long_context_that_misses_memory_fits_with_a_q8_0_kv_cache():
    # 32k tokens of f16 KV cache: 2 x 30 layers x 3 KV heads x 64 x 2 bytes = 23 kB a token
    p = plan(SMOLLM, laptop(context_tokens=32768, memory_gb=0.75))
    by = {}
    for c in p.candidates:
        if c.format == "gguf" and not c.is_student:
            by[(c.precision, c.kv_cache)] = c
    default, small = by[("q8_0", None)], by[("q8_0", "q8_0")]
    assert not default.feasible and default.violations == ("memory",)
    assert small.feasible and small.label == "gguf q8_0, KV cache q8_0"
    ratio = small.predicted.kv_cache_bytes / default.predicted.kv_cache_bytes
    assert ratio == dict(RUNTIMES["llama.cpp"].kv_options)["q8_0"] / 2  # 34/32 bytes vs 2
    assert default.predicted.kv_cache_bytes == 2 * 30 * 3 * 64 * 2 * 32768
    assert "1.0625 B an element" in small.predicted.arithmetic
    assert p.chosen is not None and p.chosen.feasible


def test_no_smaller_kv_cache_where_the_default_fits():
    p = plan(SMOLLM, laptop())
    assert all(c.kv_cache is None for c in p.candidates)


def test_only_runtimes_that_offer_one_get_a_smaller_kv_cache():
    p = plan(SMOLLM, laptop(context_tokens=32768, memory_gb=0.75))
    assert {c.runtime for c in p.candidates if c.kv_cache} == {"llama.cpp"}
    assert not RUNTIMES["openvino"].kv_options  # its CPU plugin holds u8 already
    # a plan round-trips with the dimension
    from edgepack.plan.planner import Plan

    again = Plan.from_dict(p.to_dict())
    assert [c.kv_cache for c in again.candidates] == [c.kv_cache for c in p.candidates]


@pytest.mark.integration
def test_the_q8_0_kv_cache_is_built_measured_and_checked(tmp_path):
    profile = tmp_path / "long.toml"
    text = (PROFILES / "laptop.toml").read_text().replace('name = "laptop"', 'name = "long"')
    budget = dict(context_tokens=32768, memory_gb=0.75, first_token_ms=120000)
    budget |= dict(decode_tokens_per_s=0.5, min_quality=0.5, disk_gb=100)
    for key, value in budget.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, flags=re.M)
    profile.write_text(text)
    out = tmp_path / "bundles"
    r = run_cli(
        "build", "--target", str(profile), "--format", "gguf", "--precision", "q8_0",
        "--candidates", "1", "--eval-tokens", "512", "--out", str(out), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    assert manifest["plan"]["kv_cache"] == "q8_0"
    assert manifest["runtime"]["settings"] == {"kv_cache": "q8_0"}  # check.py runs it so
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]
    effect = manifest["quality"]["kv_cache"]
    assert effect["type"] == "q8_0" and effect["target_context_tokens"] == 32768
    assert effect["context_tokens"] == 1024  # all the 512-token evaluation holds
    assert 0 <= effect["kl_vs_default_mean"] < 0.05
    assert effect["top1_agreement_vs_default"] > 0.9
