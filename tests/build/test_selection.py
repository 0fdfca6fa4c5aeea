"""Selection from tables of measured trials: the gate, the objective with its tolerance,
non-dominance, the mixed fallback. No backend: trials are built from plain figures."""

from __future__ import annotations

import pytest

from edgepack.build.selection import Trial, choose, gate, gate_message, mixed_fallback
from edgepack.device.profiles import load_profile, parse_profile
from edgepack.plan.planner import Candidate, Prediction
from edgepack.plan.ranking import dominates, rank_key

MB = 1_000_000


def candidate(fmt="gguf", precision="q8_0", bits=8, runtime="llama.cpp", device="cpu", pq=0.99):
    prediction = Prediction(
        memory_bytes=300 * MB,
        host_memory_bytes=300 * MB,
        weights_bytes=140 * MB,
        kv_cache_bytes=50 * MB,
        overhead_bytes=110 * MB,
        disk_bytes=150 * MB,
        decode_tokens_per_s=50.0,
        first_token_ms=200.0,
        quality=pq,
        parameters=134_000_000,
        arithmetic="-",
    )
    return Candidate(fmt, precision, bits, runtime, device, None, True, (), (), prediction)


def trial(name, retention, peak_mb, decode, low=None, verdict="PASS", disk_mb=150, **kw):
    fmt, precision = name.split()
    bits = 4 if "4" in precision else 8 if "8" in precision else 16
    quality = {"retention": retention, "perplexity": 20 / retention, "reference_perplexity": 20}
    if low is not None:
        quality |= {"retention_low": low, "retention_high": min(1.0, 2 * retention - low)}
    check = {
        "verdict": verdict,
        "checks": [{"name": "golden: capital", "pass": verdict != "FAIL"}],
        "measured": {
            "peak_rss_bytes": int(peak_mb * MB),
            "decode_tokens_per_s_p50": decode,
            "first_token_ms_p50": 100.0,
        },
    }
    if verdict == "ERROR":
        check = {"verdict": "ERROR", "error": "cannot load the model", "checks": []}
    manifest = {"files": [{"path": "model/x", "bytes": int(disk_mb * MB), "sha256": "0"}]}
    return Trial(candidate(fmt, precision, bits, **kw), quality, None, manifest, check)


def profile(objective="quality", tolerance=0.01, floor=0.85, memory_gb=3.0, disk_gb=8):
    raw = load_profile("edge-4gb").to_dict()
    raw["objective"] = objective
    raw["quality_tolerance"] = tolerance
    raw["budget"] |= {"min_quality": floor, "memory_gb": memory_gb, "disk_gb": disk_gb}
    return parse_profile(raw, source="test")


def label(t):
    return t and f"{t.candidate.format} {t.candidate.precision}"


# The make-demo scenario of the issue: a tenth of a point of retention for 3.6x the memory.
DEMO = [
    ("openvino fp16", 0.9993, 975, 50.0),
    ("gguf q8_0", 0.993, 267, 77.0),
    ("onnx int8", 0.996, 428, 57.0),
]

# make demo for edge-4gb (size objective), as measured on the 2-core build host
EDGE = [
    ("gguf q5_k_m", 0.919, 233, 58.1),
    ("gguf q4_k_m", 0.963, 235, 60.3),
    ("gguf q4_k_m_mixed", 0.960, 237, 61.2),
]

TABLE = [
    # objective, tolerance, trials, chosen
    ("quality", 0.01, DEMO, "gguf q8_0"),  # within a point: fastest, then least memory
    ("quality", 0.0, DEMO, "openvino fp16"),  # no tolerance: the most retention wins
    ("size", 0.01, DEMO, "gguf q8_0"),
    ("speed", 0.01, DEMO, "gguf q8_0"),
    # outside the tolerance the better retention wins even at more memory
    ("quality", 0.01, [("gguf q4_0", 0.90, 100, 90.0), ("gguf q8_0", 0.99, 267, 77.0)],
     "gguf q8_0"),
    ("size", 0.01, [("gguf q4_0", 0.90, 100, 90.0), ("gguf q8_0", 0.99, 267, 77.0)],
     "gguf q4_0"),
    # same memory and speed: retention decides
    ("speed", 0.0, [("gguf q6_k", 0.97, 200, 80.0), ("gguf q8_0", 0.99, 200, 80.0)],
     "gguf q8_0"),
    # make demo for edge-4gb, measured: 2 MB of 235 is not worth 4 points of retention; of the
    # two within the quality tolerance, at speeds within the speed tolerance, the smaller
    ("size", 0.01, EDGE, "gguf q4_k_m"),
    ("size", 0.0, EDGE, "gguf q4_k_m"),
    # past the memory tolerance the smaller wins, whatever it loses within the floor
    ("size", 0.01, [("gguf q4_0", 0.86, 220, 60.0), ("gguf q4_k_m", 0.963, 235, 60.3)],
     "gguf q4_0"),
    # speeds within the speed tolerance are equal for the speed objective: retention decides
    ("speed", 0.01, [("gguf q4_0", 0.86, 220, 64.0), ("gguf q4_k_m", 0.963, 235, 60.3)],
     "gguf q4_k_m"),
    ("speed", 0.01, [("gguf q4_0", 0.86, 220, 70.0), ("gguf q4_k_m", 0.963, 235, 60.3)],
     "gguf q4_0"),
]


@pytest.mark.parametrize("objective,tolerance,rows,chosen", TABLE)
def test_objective_table(objective, tolerance, rows, chosen):
    trials = [trial(*r) for r in rows]
    best = choose(profile(objective, tolerance), trials)
    assert label(best) == chosen
    others = [t for t in trials if t is not best and not t.reasons]
    assert not any(dominates(t.axes(), best.axes(), tolerance) for t in others)


def test_a_dominated_choice_is_replaced_by_its_dominator():
    # speed objective, equal speed: rank_key's next key is quality (within tolerance: equal),
    # then memory, so the smaller one wins; the non-dominance pass guarantees it regardless
    trials = [trial("openvino int8", 0.995, 600, 80.0), trial("gguf q8_0", 0.99, 270, 80.0)]
    best = choose(profile("speed", 0.01), trials)
    assert label(best) == "gguf q8_0"


@pytest.mark.parametrize(
    "row,reason",
    [
        (("gguf q8_0", 0.99, 270, 77.0, None, "ERROR"), "ended in ERROR"),
        (("gguf q8_0", 0.99, 270, 77.0, None, "FAIL"), "golden"),
        (("gguf q4_0", 0.88, 100, 90.0, 0.84), "lower bound below the floor 0.85"),
        (("gguf q8_0", 0.99, 3500, 77.0), "measured peak memory 3.50 GB > 3 GB"),
        (("gguf q8_0", 0.99, 270, 77.0, None, "PASS", 9000), "disk budget"),
    ],
)
def test_gate_rejects_with_a_reason(row, reason):
    t = trial(*row)
    reasons = gate(profile(), t)
    assert any(reason in r for r in reasons), reasons
    t.reasons.clear()
    assert choose(profile(), [t]) is None


def test_gate_accepts_when_the_lower_bound_holds_and_names_the_interval():
    ok = trial("gguf q4_k_m", 0.90, 110, 80.0, low=0.86)
    assert gate(profile(), ok) == []
    bad = trial("openvino int4_mixed", 0.918, 110, 80.0, low=0.89)
    (reason,) = gate(profile(floor=0.90), bad)
    assert "95 % interval 0.8900-" in reason and "floor 0.9" in reason


def test_gpu_candidates_are_not_judged_by_host_memory():
    t = trial("gguf q8_0", 0.99, 5000, 77.0, device="gpu")
    assert gate(profile(), t) == []


def test_device_prediction_ranks_when_the_host_is_another_kind_of_machine():
    fast_here = trial("openvino int8", 0.995, 270, 90.0)
    slow_here = trial("gguf q8_0", 0.995, 270, 70.0)
    fast_here.device_prediction = {"decode_tokens_per_s": 20.0, "ranked_by": "device prediction"}
    slow_here.device_prediction = {"decode_tokens_per_s": 30.0, "ranked_by": "device prediction"}
    assert label(choose(profile("speed"), [fast_here, slow_here])) == "gguf q8_0"
    for t in (fast_here, slow_here):
        t.reasons.clear()
        t.device_prediction["ranked_by"] = "host measurement"
    assert label(choose(profile("speed"), [fast_here, slow_here])) == "openvino int8"


def test_rank_key_tolerance_and_ties():
    def key(objective, quality, speed, memory, distilled=False):
        return rank_key(objective, quality, speed, memory, 0.999, 0.01, 0, distilled)

    assert key("quality", 0.990, 10, 1) < key("quality", 0.999, 9, 1)  # within the tolerance
    assert key("quality", 0.980, 10, 1) > key("quality", 0.999, 9, 1)  # outside it
    assert key("size", 0.9, 10, 1) < key("size", 0.99, 10, 2)
    # memories within 5 % of the smallest and speeds within 10 % of the fastest are equal
    near = dict(best_memory=100, best_speed=10)
    assert rank_key("size", 0.99, 10, 104, 0.999, 0.01, **near) < rank_key(
        "size", 0.90, 10, 100, 0.999, 0.01, **near
    )
    assert rank_key("size", 0.99, 10, 106, 0.999, 0.01, **near) > rank_key(
        "size", 0.90, 10, 100, 0.999, 0.01, **near
    )
    assert rank_key("speed", 0.999, 9.1, 100, 0.999, 0.01, **near) < rank_key(
        "speed", 0.90, 10, 100, 0.999, 0.01, **near
    )
    # among equals, the objective's own raw figure decides
    assert rank_key("size", 0.99, 10, 101, 0.999, 0.01, **near) < rank_key(
        "size", 0.99, 10, 103, 0.999, 0.01, **near
    )
    # a student comes after every undistilled candidate, whatever the objective
    assert key("size", 0.9, 10, 1) < key("size", 0.9, 10, 0.5, distilled=True)


def test_mixed_fallback_follows_a_4_bit_miss_of_the_lower_bound():
    from edgepack.export.support import inspect_model
    from edgepack.plan.planner import plan
    from tests.conftest import config_dir

    p = plan(inspect_model(config_dir("smollm2-135m")), profile(floor=0.5))
    q4 = next(c for c in p.candidates if (c.format, c.precision) == ("openvino", "int4"))
    miss = Trial(q4, {"retention": 0.91, "retention_low": 0.84}, None, {"files": []}, {})
    fallback = mixed_fallback(p, profile(floor=0.85), miss, [q4])
    assert (fallback.format, fallback.precision) == ("openvino", "int4_mixed")
    keep = Trial(q4, {"retention": 0.91, "retention_low": 0.86}, None, {"files": []}, {})
    assert mixed_fallback(p, profile(floor=0.85), keep, [q4]) is None


def test_gate_message_names_the_best_measured_and_the_floor():
    from edgepack.export.support import inspect_model
    from edgepack.plan.planner import plan
    from tests.conftest import config_dir

    prof = profile(floor=0.999)
    p = plan(inspect_model(config_dir("smollm2-135m")), profile(floor=0.5))
    t = trial("gguf q4_0", 0.83, 100, 90.0, low=0.8)
    t.candidate = next(c for c in p.candidates if (c.format, c.precision) == ("gguf", "q4_0"))
    assert choose(prof, [t]) is None
    message = gate_message(prof, p, [t])
    assert message.startswith("gguf q4_0 keeps retention 0.8300 (perplexity")
    assert "floor 0.999, no bundle written" in message


def test_a_target_judging_task_accuracy_gates_on_its_lower_bound():
    tasks = {"retention": 0.97, "retention_low": 0.80, "retention_high": 1.0, "items": 100}
    judged = trial("gguf q8_0", 0.999, 300, 50.0, low=0.99)
    judged.quality["tasks"] = tasks | {"task_set": "built-in"}
    judged.metric = "tasks"
    assert judged.retention == 0.97 and judged.retention_low == 0.80
    reasons = gate(profile(floor=0.85), judged)
    assert any(
        r.startswith("task accuracy retention 0.9700 (95 % interval 0.8000-1.0000 over 100 "
                     "items of the built-in tasks)") for r in reasons
    ), reasons
    judged.reasons.clear()
    judged.metric = "perplexity"  # the same trial judged by perplexity passes
    assert gate(profile(floor=0.85), judged) == []
    raw = load_profile("edge-4gb").to_dict()
    raw["budget"]["quality_metric"] = "accuracy"
    with pytest.raises(Exception, match="quality_metric"):
        parse_profile(raw, source="test")
