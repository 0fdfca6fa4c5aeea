"""From a host measurement to a device prediction: the arithmetic, by hand, without a backend."""

from __future__ import annotations

import pytest

from edgepack.device.profiles import load_profile
from edgepack.export.support import inspect_model
from edgepack.plan.planner import plan
from edgepack.plan.speed_calibration import device_prediction, efficiencies, record, stored
from tests.conftest import config_dir

HOST = {
    "arch": "x86_64",
    "cpu": "AMD EPYC",
    "isa": ["sse4_2", "avx2"],
    "clock_ghz": 2.0,
    "cores": 2,
    "bandwidth_gbs": 30.0,
}


def candidate(target, fmt="gguf", precision="q8_0"):
    facts = inspect_model(config_dir("smollm2-135m"))
    p = plan(facts, load_profile(target))
    return facts, next(
        c
        for c in p.candidates
        if (c.format, c.precision, c.is_student) == (fmt, precision, False)
    )


def test_bandwidth_efficiency_is_decode_times_bytes_over_bandwidth():
    _, c = candidate("edge-4gb")
    measured = {"decode_tokens_per_s_p50": 77.0, "first_token_ms_p50": 300.0, "threads": 2}
    eff = efficiencies(c.predicted, measured, HOST, c.bits)
    assert eff["bandwidth_efficiency"] == pytest.approx(
        77.0 * c.predicted.decode_bytes_per_token / 30e9, rel=1e-3
    )
    assert 0 < eff["compute_efficiency"]
    assert efficiencies(c.predicted, {}, HOST, c.bits) is None  # nothing measured


def test_device_prediction_scales_with_the_devices_bandwidth():
    facts, c = candidate("edge-4gb")
    measured = {"decode_tokens_per_s_p50": 77.0, "first_token_ms_p50": 300.0, "threads": 2}
    d = device_prediction(facts, load_profile("edge-4gb"), c, measured, HOST)
    # decode is bandwidth-bound for this model: 77 tok/s x 17 GB/s / 30 GB/s
    assert d["decode_tokens_per_s"] == pytest.approx(77.0 * 17 / 30, rel=0.02)
    assert d["ranked_by"] == "device prediction"  # an arm64 box is not this x86 host
    assert d["prior_decode_tokens_per_s"] == c.predicted.decode_tokens_per_s
    assert "measured on this host" in d["basis"]


def test_the_same_kind_of_machine_is_ranked_by_its_own_measurement():
    facts, c = candidate("edge-4gb")
    arm = HOST | {"arch": "arm64", "isa": ["neon", "dotprod"]}
    measured = {"decode_tokens_per_s_p50": 20.0, "first_token_ms_p50": 900.0, "threads": 4}
    d = device_prediction(facts, load_profile("edge-4gb"), c, measured, arm)
    assert d["host_same_kind"] and d["ranked_by"] == "host measurement"


def test_a_gpu_candidate_keeps_the_planners_gpu_model_with_its_per_token_cost():
    facts, c = candidate("t4")
    assert c.device == "gpu"
    assert c.predicted.token_overhead_s == pytest.approx(30 * 64e-6)
    # the fixed cost caps a small model far below bandwidth / bytes
    assert c.predicted.decode_tokens_per_s < 1 / (30 * 64e-6)
    d = device_prediction(facts, load_profile("t4"), c, {"decode_tokens_per_s_p50": 77}, HOST)
    assert d["calibration"] is None and d["ranked_by"] == "device prediction"
    assert d["decode_tokens_per_s"] == c.predicted.decode_tokens_per_s


def test_the_store_round_trips_per_host(tmp_path):
    eff = {"bandwidth_efficiency": 0.5, "compute_efficiency": 0.2}
    record(tmp_path, HOST, "llama.cpp", "q8_0", eff, "m")
    record(tmp_path, HOST | {"cpu": "other"}, "openvino", "int8", eff, "m")
    assert stored(tmp_path, HOST) == {("llama.cpp", "q8_0"): (0.5, 0.2)}
    facts = inspect_model(config_dir("smollm2-135m"))
    prior = plan(facts, load_profile("xeon"))
    calibrated = plan(facts, load_profile("xeon"), stored(tmp_path, HOST))
    pick = {(c.format, c.precision, c.is_student): c for c in calibrated.candidates}
    q8 = pick[("gguf", "q8_0", False)]
    assert q8.predicted.bandwidth_efficiency == 0.5
    assert calibrated.notes and "llama.cpp q8_0" in calibrated.notes[0]
    assert not [n for n in prior.notes if "measured on this host" in n]
