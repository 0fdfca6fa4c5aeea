"""From a host measurement to the device's one prediction: the arithmetic, without a backend."""

from __future__ import annotations

import pytest

from edgepack.device.profiles import load_profile
from edgepack.export.support import inspect_model
from edgepack.plan.planner import plan
from edgepack.plan.speed_calibration import (
    device_factors,
    device_prediction,
    host_factors,
    host_fitted,
    record,
    stored,
)
from edgepack.plan.speed_fit import fitted
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


def measured_at(facts, c, decode_x, prefill_x):
    """A check's figures at these multiples of the fit's speeds on HOST."""
    fit = host_fitted(facts, c, HOST, 2)
    return {
        "decode_tokens_per_s_p50": fit["decode_tokens_per_s"] * decode_x,
        "first_token_ms_p50": fit["first_token_ms"] / prefill_x,
        "threads": 2,
    }


def weight(phase):
    return fitted()["transfer"][f"cpu/{phase}"]["weight"]


def test_the_host_factor_is_measured_over_fitted_on_this_host():
    facts, c = candidate("edge-4gb")
    f = host_factors(facts, c, measured_at(facts, c, 0.5, 2.0), HOST)
    assert f["decode"] == pytest.approx(0.5) and f["prefill"] == pytest.approx(2.0)
    assert host_factors(facts, c, {}, HOST) == {}  # nothing measured, nothing to refine


def test_transfer_weights_come_from_the_database_and_are_fractions():
    for kind in ("cpu", "gpu"):
        for phase in ("decode", "prefill"):
            t = fitted()["transfer"][f"{kind}/{phase}"]
            assert 0.0 <= t["weight"] <= 1.0 and t["pairs"] > 50


def test_llama_cpp_is_refined_at_the_databases_weight():
    facts, c = candidate("edge-4gb")
    d = device_prediction(
        facts, load_profile("edge-4gb"), c, measured_at(facts, c, 0.5, 2.0), HOST
    )
    assert d["decode_tokens_per_s"] == pytest.approx(
        c.predicted.decode_tokens_per_s * 0.5 ** weight("decode"), rel=0.01
    )
    assert d["first_token_ms"] == pytest.approx(
        c.predicted.first_token_ms / 2.0 ** weight("prefill"), rel=0.01
    )
    # the interval moves with the centre, keeping the fit's spread
    spread = c.predicted.decode_tokens_per_s_high / c.predicted.decode_tokens_per_s_low
    high, low = d["decode_tokens_per_s_high"], d["decode_tokens_per_s_low"]
    assert high / low == pytest.approx(spread, rel=0.01)
    assert d["ranked_by"] == "device prediction"  # an arm64 box is not this x86 host
    assert "refined by this host" in d["basis"]
    assert d["calibration"]["device_factor"]["decode"] == pytest.approx(
        0.5 ** weight("decode"), rel=1e-3
    )


def test_another_runtime_is_calibrated_and_the_hosts_own_error_taken_out():
    # openvino measured at 1.5x the fit here, where llama.cpp ran at 0.75x: openvino is 2x
    # llama.cpp on this host; this host's own error (0.75) comes back only at weight w
    assert device_factors("openvino", {"decode": 1.5, "prefill": 1.0}, None)[0] == 1.5
    dec, _ = device_factors("openvino", {"decode": 1.5, "prefill": 1.0}, {"decode": 0.75,
                                                                          "prefill": 1.0})
    assert dec == pytest.approx(2.0 * 0.75 ** weight("decode"))
    facts, c = candidate("edge-4gb", "openvino", "int8")
    d = device_prediction(
        facts, load_profile("edge-4gb"), c, measured_at(facts, c, 1.5, 1.0), HOST,
        {"decode": 0.75, "prefill": 1.0},
    )  # fmt: skip
    assert d["calibration"]["device_factor"]["decode"] == pytest.approx(dec, rel=1e-3)
    assert "taken out" in d["basis"]
    # the plan's prior ratio (the registry's) is replaced, not compounded
    fit_llama = c.predicted.decode_tokens_per_s / float(
        c.predicted.speed_basis.split("openvino at ")[1].split("x")[0]
    )
    assert d["decode_tokens_per_s"] == pytest.approx(fit_llama * dec, rel=0.02)


def test_the_same_kind_of_machine_is_ranked_by_its_own_measurement():
    facts, c = candidate("edge-4gb")
    arm = HOST | {"arch": "arm64", "isa": ["neon", "dotprod"]}
    measured = {"decode_tokens_per_s_p50": 20.0, "first_token_ms_p50": 900.0, "threads": 4}
    d = device_prediction(facts, load_profile("edge-4gb"), c, measured, arm)
    assert d["host_same_kind"] and d["ranked_by"] == "host measurement"


def test_a_gpu_candidate_keeps_the_fitted_gpu_model():
    facts, c = candidate("t4")
    assert c.device == "gpu"
    d = device_prediction(facts, load_profile("t4"), c, {"decode_tokens_per_s_p50": 77}, HOST)
    assert d["calibration"] is None and d["ranked_by"] == "device prediction"
    assert d["decode_tokens_per_s"] == c.predicted.decode_tokens_per_s
    assert "cannot calibrate a GPU" in d["basis"]


def test_an_interval_straddling_the_budget_is_marginal():
    facts, c = candidate("edge-4gb")
    profile = load_profile("edge-4gb")
    fast = device_prediction(facts, profile, c, {}, HOST)
    assert fast["marginal"] == [] or fast["decode_tokens_per_s_low"] < 5
    budget = profile.budget.model_copy(update={"decode_tokens_per_s": fast["decode_tokens_per_s"]})
    tight = profile.model_copy(update={"budget": budget})
    assert "decode" in device_prediction(facts, tight, c, {}, HOST)["marginal"]


def test_the_store_round_trips_per_host(tmp_path):
    cal = {"runtime": "llama.cpp", "precision": "q8_0",
           "device_factor": {"decode": 0.5, "prefill": 2.0}}  # fmt: skip
    record(tmp_path, HOST, cal, "m")
    record(tmp_path, HOST | {"cpu": "other"}, cal | {"runtime": "openvino"}, "m")
    assert stored(tmp_path, HOST) == {("llama.cpp", "q8_0"): (0.5, 2.0)}
    facts = inspect_model(config_dir("smollm2-135m"))
    prior = plan(facts, load_profile("xeon"))
    calibrated = plan(facts, load_profile("xeon"), stored(tmp_path, HOST))

    def q8(p):
        key = ("gguf", "q8_0", False)
        return next(c for c in p.candidates if (c.format, c.precision, c.is_student) == key)

    assert q8(calibrated).predicted.decode_tokens_per_s == pytest.approx(
        q8(prior).predicted.decode_tokens_per_s * 0.5, rel=0.01
    )
    assert q8(calibrated).predicted.first_token_ms == pytest.approx(
        q8(prior).predicted.first_token_ms / 2.0, rel=0.01
    )
    assert calibrated.notes and "llama.cpp q8_0" in calibrated.notes[0]
    assert not [n for n in prior.notes if "measured on this host" in n]


def test_an_older_store_of_efficiencies_is_ignored(tmp_path):
    import json

    from edgepack.plan.speed_calibration import STORE, host_key

    old = {host_key(HOST): {"llama.cpp/q8_0": {"bandwidth_efficiency": 0.5,
                                               "compute_efficiency": 0.2}}}  # fmt: skip
    (tmp_path / STORE).write_text(json.dumps(old))
    assert stored(tmp_path, HOST) == {}
