"""The bundle's side of the comparison: its own runner (imported from the bundle directory, as
check.py imports it), its check.py as a device runs it, the fp32 reference and the runner's
quality on the evaluation text, and the planner's predictions for the bundle before and after
calibration."""

from __future__ import annotations

import json
import os
import sys
import time

from .timed import timed_runs, torch_threads


def _kit_runner(spec: dict):
    """The bundle's own runner, imported from the bundle directory (no edgepack code)."""
    sys.path.insert(0, spec["bundle"])
    import devicekit

    model_dir = os.path.join(spec["bundle"], "model")
    return devicekit.load_runner(spec["runtime"], model_dir, threads=spec["threads"] or None)


def runner_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    runner = _kit_runner(spec)
    load_s = time.perf_counter() - start

    def generate(prompt: list[int], n: int):
        gen = runner.generate(prompt, n, stop_at_eos=False)
        fed = getattr(gen, "prompt_tokens_processed", None)
        return gen.first_token_s, gen.decode_tokens_per_s, gen.tokens, fed

    module = sys.modules["devicekit"].RUNNERS[spec["runtime"]]
    api = f"the bundle's {module}.py via devicekit.load_runner ({runner.version()})"
    figures = {"api": api, "load_s": load_s, "threads": getattr(runner, "threads", None)}
    return figures | timed_runs(generate, spec)


def _eval_reference(spec: dict):
    from pathlib import Path

    from edgepack.cache import cache_root
    from edgepack.measure.quality import cached_reference_eval

    with open(spec["eval_path"], encoding="utf-8") as fh:
        text = fh.read()
    return cached_reference_eval(Path(spec["model_dir"]), spec["eval_name"], text, cache_root())


def reference_variant(spec: dict) -> dict:
    torch_threads(spec)
    start = time.perf_counter()
    ref = _eval_reference(spec)
    return {
        "perplexity": ref.perplexity,
        "eval_tokens": len(ref.ids),
        "scored_tokens": int(ref.logprobs.shape[0]),
        "chunks": len(ref.chunks),
        "seconds": time.perf_counter() - start,
    }


def quality_variant(spec: dict) -> dict:
    from edgepack.measure.quality import measure

    ref = _eval_reference(spec)  # cached by the reference process: no torch here
    start = time.perf_counter()
    quality = measure(_kit_runner(spec), ref).to_dict()
    return quality | {"seconds": time.perf_counter() - start}


def check_variant(spec: dict) -> dict:
    """The bundle's own check.py with this python, from outside the bundle, as a device runs it:
    its figures as check.py measured them (a FAIL against the budgets is still a figure)."""
    import subprocess

    cmd = [sys.executable, os.path.join(spec["bundle"], "check.py"), "--json"]
    cmd += ["--repetitions", str(spec["repetitions"])]
    cmd += ["--threads", str(spec["threads"])] if spec["threads"] else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=spec["cwd"])
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {}
    m = {k: v for k, v in (report.get("measured") or {}).items() if k != "golden"}
    if proc.returncode not in (0, 1) or "decode_tokens_per_s_p50" not in m:
        why = report.get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"check.py exited {proc.returncode}: {why}")
    shown = " ".join(["check.py", *cmd[2:]])
    return {
        "api": f"{shown} ({report['runtime']} {m.get('runtime_version')}): {report['verdict']}",
        "decode_tokens_per_s_p50": m["decode_tokens_per_s_p50"],
        "first_token_ms_p50": m["first_token_ms_p50"],
        "peak_rss_bytes": m["peak_rss_bytes"],  # check.py's measuring child, not this process
        "load_s": m["load_s"],
        "warmup_s": 0.0,  # check.py does not report its warm-up apart
        "threads": m.get("threads"),
        "prompt_tokens": m.get("prompt_tokens"),
        "prompt_tokens_processed": m.get("prompt_tokens_processed") or [],
        "verdict": report["verdict"],
        "measured": m,
    }


def calibrate_variant(spec: dict) -> dict:
    """Before and after calibration for one bundle and target (spec "target": a profile name or
    file; None: the manifest's): the planner's prior, the build's calibrated device prediction,
    edgepack.plan.speed_calibration's prediction from spec "measured" (a check's figures; this
    host's bandwidth probe runs here) and that measurement."""
    with open(os.path.join(spec["bundle"], "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    keys = ("decode_tokens_per_s", "first_token_ms", "memory_bytes")
    m = spec["measured"]
    out = {
        "target": manifest["target"]["name"],
        "prior": {k: manifest["predicted"].get(k) for k in keys} | {"source": "manifest"},
        "build": None,
        "measured": {
            "decode_tokens_per_s": m["decode_tokens_per_s_p50"],
            "first_token_ms": m["first_token_ms_p50"],
            "memory_bytes": m["peak_rss_bytes"],
        },
    }
    try:
        out |= _calibrated(spec, manifest, keys)
    except Exception as exc:  # noqa: BLE001 - recorded and printed with its reason
        out["calibrated"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    if out["target"] == manifest["target"]["name"] and manifest.get("device_prediction"):
        dev = manifest["device_prediction"]
        out["build"] = {k: dev.get(k) for k in (*keys[:2], "basis")}
    return out


def _calibrated(spec: dict, manifest: dict, keys: tuple) -> dict:
    from edgepack.device.profiles import load_profile, parse_profile
    from edgepack.export.registry import FORMATS
    from edgepack.export.support import inspect_model
    from edgepack.plan.planner import Candidate, Prediction, predict
    from edgepack.plan.speed_calibration import device_prediction, host_machine

    facts = inspect_model(manifest["source_model"]["path"])
    if spec.get("target"):
        profile = load_profile(spec["target"])
    else:
        profile = parse_profile(manifest["target"], source="the bundle's manifest")
    c = manifest["plan"]  # rebuilt as edgepack.plan.planner.Plan.from_dict does
    fields = {**c, "predicted": Prediction.from_dict(c["predicted"])}
    fields |= {"reasons": tuple(c["reasons"]), "violations": tuple(c["violations"])}
    candidate = Candidate(**fields)
    host = host_machine()
    cal = device_prediction(facts, profile, candidate, spec["measured"], host)
    out = {"calibrated": {k: cal.get(k) for k in (*keys[:2], "basis", "ranked_by")}}
    out |= {"host": host, "target": profile.name}
    if profile.name != manifest["target"]["name"]:  # another target: the planner's prior for it
        fmt = FORMATS[candidate.format]
        prior = predict(
            facts,
            profile,
            fmt,
            fmt.precision(candidate.precision),
            candidate.student_layers,
            candidate.device == "gpu",
        )
        out["prior"] = {k: getattr(prior, k) for k in keys} | {"source": "planner"}
    return out
