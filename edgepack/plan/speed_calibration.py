"""From this host's measurement to the device's prediction: one prediction, refined.

The plan predicts speed with the model fitted to published llama.cpp measurements
(edgepack.plan.speed_model). A build's check measures decode and first token on this host; the
same fitted model predicts both for this host (its cores, clock and ISA, and the bandwidth its
probe measured) with the candidate's work. Their quotient, per phase, is this host's factor
f = measured / fitted (a speed ratio: above 1, faster than the fit says).

- llama.cpp, the runtime the database measured: f says how the fit errs here, but the database
  says how little of one device's error recurs on another for the same model and quant
  (edgepack.plan.speed_fit.transfer: a weight w per phase, fitted over every such pair of
  devices). The device's prediction is the fitted one times f ** w.
- another runtime (OpenVINO, ONNX Runtime, onnxruntime-genai), which the database lacks: its
  speed against llama.cpp's fitted speed, measured here, replaces the registry's prior ratio.
  Where the build also measured a llama.cpp candidate on this host, that candidate's factor
  f_ll is this host's own error of the fit: it is taken out and put back at weight w,
  factor = (f / f_ll) x f_ll ** w. Without one, f stands whole.
- a GPU candidate: a CPU host cannot calibrate a GPU; the fitted GPU model stands.

The factors are the same whatever the target, so they are kept per host for
`edgepack plan --calibrated`, and the planner applies them through predict(calibration=...).
The interval keeps the fit's held-out spread around the new centre. When host and device are
the same kind of machine (arch and widest ISA feature), the ranking uses the host's own
measurement; otherwise the device prediction. The manifest records the factors, the weights
and what calibrated what.
"""

from __future__ import annotations

import os
from functools import lru_cache

from ..cache import write_atomic
from ..device.hardware import isa_class
from ..device.profiles import Profile
from ..export.registry import FORMATS
from ..model.facts import ModelFacts
from .planner import Candidate, predict, straddled
from .prediction import PROMPT_TOKENS, quant_of
from .speed_fit import fitted
from .speed_model import Cluster, Machine, Work, seconds_per_token

LLAMA = "llama.cpp"


@lru_cache(maxsize=1)
def host_machine() -> dict:
    """This host as the speed model sees it: arch, ISA, clock, cores, measured bandwidth."""
    from ..device.cpuinfo import detect_cpu
    from ..device.detect import allowed_cores, probe_bandwidth

    allowed, cores, _ = allowed_cores()
    cpu = detect_cpu(allowed)
    bandwidth = probe_bandwidth(cores)
    return {
        "arch": cpu.arch,
        "cpu": cpu.model,
        "isa": list(cpu.isa),
        "clock_ghz": cpu.clock_ghz,
        "cores": cores,
        "bandwidth_gbs": bandwidth.all_threads_gbs,
        "bandwidth_probe": f"numpy sum of {bandwidth.bytes // 1_000_000} MB, {cores} threads",
        "pid": os.getpid(),
    }


def host_fitted(facts: ModelFacts, candidate: Candidate, host: dict, threads: int) -> dict:
    """llama.cpp's decode (tok/s) and first token (ms) on this host by the fitted model, for the
    candidate's work: the bytes and ops the plan predicted with."""
    p = candidate.predicted
    fmt = FORMATS[candidate.format]
    precision = fmt.precision(candidate.precision)
    work = Work(
        p.decode_bytes_per_token,
        p.prefill_ops / PROMPT_TOKENS,
        candidate.student_layers or facts.num_layers,
        precision.bits,
        quant_of(fmt, precision),
    )
    cluster = Cluster(host["cores"], host["clock_ghz"], tuple(host["isa"]))
    machine = Machine(
        "cpu", host["bandwidth_gbs"], host["arch"], threads=threads, clusters=(cluster,)
    )
    coef = fitted()["coefficients"]
    decode_s = seconds_per_token(coef, "decode", work, machine)
    prefill_s = seconds_per_token(coef, "prefill", work, machine, PROMPT_TOKENS) * PROMPT_TOKENS
    return {"decode_tokens_per_s": 1 / decode_s, "first_token_ms": prefill_s * 1000}


def host_factors(facts: ModelFacts, candidate: Candidate, measured: dict, host: dict) -> dict:
    """{"decode": f, "prefill": f}: measured / fitted on this host (speeds), or {} where the
    check measured no speed or the candidate runs on a GPU."""
    decode = measured.get("decode_tokens_per_s_p50")
    first_ms = measured.get("first_token_ms_p50")
    if candidate.device == "gpu" or not decode or not first_ms:
        return {}
    if not candidate.predicted.decode_bytes_per_token:
        return {}
    threads = measured.get("threads") or host["cores"]
    fit = host_fitted(facts, candidate, host, threads)
    return {
        "decode": decode / fit["decode_tokens_per_s"],
        "prefill": fit["first_token_ms"] / first_ms,
        "fitted_here": {k: round(v, 2) for k, v in fit.items()},
        "threads": threads,
    }


def weight(phase: str) -> float:
    """How much of a host's error of the fit recurs on another CPU device, for this phase
    (edgepack.plan.speed_fit.transfer, stored with the fit)."""
    return fitted().get("transfer", {}).get(f"cpu/{phase}", {}).get("weight", 0.0)


def device_factors(runtime: str, factors: dict, llama: dict | None) -> tuple[float, float]:
    """(decode, prefill) factors on the fitted llama.cpp speed for the device (the module
    docstring): this host's factors with its own error of the fit kept at weight w."""
    out = []
    for phase in ("decode", "prefill"):
        w = weight(phase)
        f = factors[phase]
        own = f if runtime == LLAMA else (llama or {}).get(phase, 1.0)
        out.append((f / own) * own**w)
    return out[0], out[1]


def device_prediction(
    facts: ModelFacts,
    profile: Profile,
    candidate: Candidate,
    measured: dict,
    host: dict,
    llama: dict | None = None,
) -> dict:
    """The device's decode and first token with their intervals, the host's factors that
    refined them, and what the ranking uses. llama: host_factors() of a llama.cpp candidate
    measured on this host in the same build, if any."""
    fmt = FORMATS[candidate.format]
    precision = fmt.precision(candidate.precision)
    hw = profile.hardware
    same = isa_class(hw.arch, hw.isa) == isa_class(host["arch"], host["isa"])
    on_gpu = candidate.device == "gpu"
    factors = host_factors(facts, candidate, measured, host)
    calibration = None
    p = candidate.predicted
    if on_gpu:
        how = "the fitted GPU model (a CPU host cannot calibrate a GPU)"
    elif not factors:
        how = "the fitted model (nothing measured on this host)"
    else:
        pair = device_factors(candidate.runtime, factors, llama)
        p = predict(
            facts, profile, fmt, precision, candidate.student_layers, False, pair,
            candidate.kv_cache, pruned_mlp=candidate.pruned_mlp,
        )  # fmt: skip
        calibration = {
            "runtime": candidate.runtime,
            "precision": candidate.precision,
            "host": f"{host['cpu']}, {factors['threads']} threads, "
            f"{host['bandwidth_gbs']:g} GB/s measured",
            "host_factor": {k: round(factors[k], 4) for k in ("decode", "prefill")},
            "host_fitted": factors["fitted_here"],
            "llama_cpp_host_factor": llama and {k: round(llama[k], 4) for k in llama if
                                                k in ("decode", "prefill")},
            "weight": {ph: round(weight(ph), 4) for ph in ("decode", "prefill")},
            "device_factor": {"decode": round(pair[0], 4), "prefill": round(pair[1], 4)},
        }  # fmt: skip
        how = _how(candidate.runtime, calibration)
    return {
        "decode_tokens_per_s": p.decode_tokens_per_s,
        "decode_tokens_per_s_low": p.decode_tokens_per_s_low,
        "decode_tokens_per_s_high": p.decode_tokens_per_s_high,
        "first_token_ms": p.first_token_ms,
        "first_token_ms_low": p.first_token_ms_low,
        "first_token_ms_high": p.first_token_ms_high,
        "marginal": straddled(p, profile.budget),
        "basis": how,
        # the speed model behind every prediction of this build (the plan's, before any factor)
        "model": candidate.predicted.speed_basis.split("; ")[0],
        "calibration": calibration,
        "host_same_kind": same,
        "ranked_by": "host measurement" if same and not on_gpu else "device prediction",
    }


def _how(runtime: str, cal: dict) -> str:
    f, w = cal["host_factor"], cal["weight"]
    here = (
        f"measured {f['decode']:.2f}x the fit's decode and {f['prefill']:.2f}x its prompt "
        f"speed on {cal['host']}"
    )
    if runtime == LLAMA:
        return (
            f"refined by this host: {here}, kept at weight {w['decode']:.2f} / "
            f"{w['prefill']:.2f} (how much of one device's error recurs on another in the "
            "published rows)"
        )
    own = "no llama.cpp candidate measured here to take this host's own error out"
    if cal["llama_cpp_host_factor"]:
        own = "this host's own error of the fit (its llama.cpp candidate's) taken out"
    return f"{runtime} calibrated on this host: {here}; {own}"


# -- the store: factors this host measured, for `edgepack plan --calibrated` ----------------

STORE = "calibration.json"


def host_key(host: dict) -> str:
    return f"{host['arch']}|{host['cpu']}|{host['cores']} cores"


def record(cache_dir, host: dict, calibration: dict, model: str) -> None:
    """Keep this host's device factors of a runtime and precision (the latest wins)."""
    import datetime
    import json
    from pathlib import Path

    path = Path(cache_dir) / STORE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    rows = data.setdefault(host_key(host), {})
    rows[f"{calibration['runtime']}/{calibration['precision']}"] = {
        "device_factor": calibration["device_factor"],
        "measured_on": model,
        "date": datetime.date.today().isoformat(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def stored(cache_dir, host: dict) -> dict:
    """{(runtime, precision): (decode, prefill) factor} measured on this host, for
    planner.plan(calibration=...). Rows of an older form (efficiencies) are skipped."""
    import json
    from pathlib import Path

    try:
        data = json.loads((Path(cache_dir) / STORE).read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key, row in data.get(host_key(host), {}).items():
        factor = row.get("device_factor") if isinstance(row, dict) else None
        if not factor:
            continue
        runtime, precision = key.split("/", 1)
        out[(runtime, precision)] = (factor["decode"], factor["prefill"])
    return out
