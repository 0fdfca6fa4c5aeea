"""From this host's measurement to a prediction for the device.

The same artifact in the same runtime keeps its quality and its memory from one machine to
another; its speed does not. The planner models speed as memory bandwidth x an efficiency per
runtime (decode) and peak ops x an efficiency (prefill). A bundle's check on this host measures
decode and first token; with the bytes read per token and the prefill ops of the planner's
prediction, and this host's measured bandwidth (edgepack.device.detect's probe, every allowed core)
and peak ops, that gives the runtime's efficiencies here:

    bandwidth_efficiency = decode x bytes per token / host bandwidth
    compute_efficiency   = prefill ops / (host peak ops x (first token - one token's read time))

The device is then predicted by the planner with these efficiencies in place of the priors
(plus, on a GPU, the fixed per-token cost the planner adds: a CPU measurement cannot calibrate a
GPU, so a GPU candidate keeps the planner's GPU model). When host and device are the same kind
of machine (arch and widest ISA feature), the ranking uses the host's own measurement;
otherwise it uses the calibrated prediction. The manifest records both, and how.
"""

from __future__ import annotations

import os
from functools import lru_cache

from ..cache import write_atomic
from ..device.hardware import cpu_peak_ops, isa_class
from ..device.profiles import Profile
from ..export.registry import FORMATS
from ..model.facts import ModelFacts
from .planner import Candidate, Prediction, predict

GB = 1e9


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


def efficiencies(prediction: Prediction, measured: dict, host: dict, bits: int) -> dict | None:
    """The runtime's bandwidth and compute efficiency on this host, from its check."""
    decode = measured.get("decode_tokens_per_s_p50")
    first_ms = measured.get("first_token_ms_p50")
    if not decode or not first_ms or not prediction.decode_bytes_per_token:
        return None
    threads = measured.get("threads") or host["cores"]
    bandwidth = host["bandwidth_gbs"] * GB
    bw_eff = decode * prediction.decode_bytes_per_token / bandwidth
    read_s = prediction.decode_bytes_per_token / (bw_eff * bandwidth)
    peak = cpu_peak_ops(threads, host["clock_ghz"], host["isa"], bits)
    compute_s = max(first_ms / 1000 - read_s, 1e-6)
    return {
        "bandwidth_efficiency": round(bw_eff, 4),
        "compute_efficiency": round(prediction.prefill_ops / (peak * compute_s), 4),
        "host_bandwidth_gbs": host["bandwidth_gbs"],
        "host_peak_gops": round(peak / 1e9, 1),
        "threads": threads,
    }


def device_prediction(
    facts: ModelFacts, profile: Profile, candidate: Candidate, measured: dict, host: dict
) -> dict:
    """Decode and first token predicted for the target's device, and what the ranking uses."""
    fmt = FORMATS[candidate.format]
    precision = fmt.precision(candidate.precision)
    hw = profile.hardware
    same = isa_class(hw.arch, hw.isa) == isa_class(host["arch"], host["isa"])
    on_gpu = candidate.device == "gpu"
    eff = None if on_gpu else efficiencies(candidate.predicted, measured, host, candidate.bits)
    layers = candidate.student_layers
    if eff is None:
        p = candidate.predicted
        basis = "the planner's GPU model" if on_gpu else "the planner's priors (not measured)"
    else:
        pair = (eff["bandwidth_efficiency"], eff["compute_efficiency"])
        p = predict(
            facts, profile, fmt, precision, layers, on_gpu, pair, pruned_mlp=candidate.pruned_mlp
        )
        basis = (
            f"{candidate.runtime} efficiencies measured on this host ({host['cpu']}, "
            f"{eff['threads']} threads, {host['bandwidth_gbs']:g} GB/s measured) applied to "
            f"{profile.name}'s {hw.cores} cores, {hw.memory_bandwidth_gbs:g} GB/s"
        )
    rank_by_device = not same or on_gpu
    return {
        "decode_tokens_per_s": p.decode_tokens_per_s,
        "first_token_ms": p.first_token_ms,
        "prior_decode_tokens_per_s": candidate.predicted.decode_tokens_per_s,
        "prior_first_token_ms": candidate.predicted.first_token_ms,
        "basis": basis,
        "calibration": eff,
        "host_same_kind": same,
        "ranked_by": "device prediction" if rank_by_device else "host measurement",
    }


# -- the store: efficiencies this host measured, for `edgepack plan --calibrated` -----------

STORE = "calibration.json"


def host_key(host: dict) -> str:
    return f"{host['arch']}|{host['cpu']}|{host['cores']} cores"


def record(cache_dir, host: dict, runtime: str, precision: str, eff: dict, model: str) -> None:
    """Keep this host's measured efficiencies of a runtime and precision (the latest wins)."""
    import datetime
    import json
    from pathlib import Path

    path = Path(cache_dir) / STORE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    rows = data.setdefault(host_key(host), {})
    rows[f"{runtime}/{precision}"] = {
        "bandwidth_efficiency": eff["bandwidth_efficiency"],
        "compute_efficiency": eff["compute_efficiency"],
        "measured_on": model,
        "date": datetime.date.today().isoformat(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def stored(cache_dir, host: dict) -> dict:
    """{(runtime, precision): (bandwidth, compute efficiency)} measured on this host, for
    planner.plan(calibration=...)."""
    import json
    from pathlib import Path

    try:
        data = json.loads((Path(cache_dir) / STORE).read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key, row in data.get(host_key(host), {}).items():
        runtime, precision = key.split("/", 1)
        out[(runtime, precision)] = (row["bandwidth_efficiency"], row["compute_efficiency"])
    return out
