"""One benchmark variant in its own process (edgepack.bench.child), and its figures combined:
p50s, repetitions pooled across rounds, and the ratios tools/bench.py reports side by side."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_child(spec: dict, scratch: Path) -> dict:
    """One variant in its own process; returns its JSON report plus its peak RSS in bytes."""
    spec_path = scratch / f"spec-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    err_path = spec_path.with_suffix(".err")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgepack.bench.child", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        out = proc.stdout.read()
        proc.stdout.close()
        # wait4 reaps this child and gives its own rusage (ru_maxrss: its peak resident set)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    unit = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines else None
    if report is None or "error" in report:
        tail = err_path.read_text().strip().splitlines()[-5:]
        why = report["error"] if report else f"exit {proc.returncode}"
        raise SystemExit(f"bench: {spec['variant']} failed: {why}\n" + "\n".join(tail))
    # a child that reports a peak of its own (check: check.py's measuring process) keeps it
    return {"peak_rss_bytes": usage.ru_maxrss * unit} | report


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def speed(report: dict, baseline_tokens: list[int] | None) -> dict:
    tokens = report.pop("tokens")
    figures = report | {
        "decode_tokens_per_s_p50": p50(report["decode_tokens_per_s"]),
        "first_token_ms_p50": p50(report["first_token_ms"]),
    }
    if baseline_tokens is not None:  # how long the greedy output stays the fp32 one
        pairs = list(zip(tokens, baseline_tokens, strict=False))
        same = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
        figures["same_tokens_as_fp32"] = same
    return figures


def merge_rounds(reports: list[dict]) -> dict:
    """One variant's reports of every round as one: the per-repetition lists joined (their p50
    is over every repetition of every round), check.py's p50s as the median of its rounds, the
    highest peak, and each round's p50s kept ("by_round") for paired ratios."""
    dec, ftk = "decode_tokens_per_s", "first_token_ms"
    out = dict(reports[0])
    if dec in out and isinstance(out[dec], list):  # a child's own repetitions
        for key in (dec, ftk, "prompt_tokens_processed"):
            out[key] = [x for r in reports for x in r[key]]
        out["by_round"] = {k: [p50(r[k]) for r in reports] for k in (dec, ftk)}
    else:  # check.py: its own p50s
        for key in (f"{dec}_p50", f"{ftk}_p50"):
            out[key] = p50([r[key] for r in reports])
        out["by_round"] = {k: [r[f"{k}_p50"] for r in reports] for k in (dec, ftk)}
        pooled = {k: out[k] for k in (f"{dec}_p50", f"{ftk}_p50")}
        out["measured"] = dict(out.get("measured") or {}) | pooled  # what calibrate reads
    out["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in reports)
    out["rounds"] = len(reports)
    return out


def ratios(entry: dict) -> dict:
    v, q, size = entry["variants"], entry["quality"], entry["size"]
    base, runner = v["baseline"], v["runner"]
    dec, ftk = "decode_tokens_per_s_p50", "first_token_ms_p50"
    out = {
        "runner_decode_vs_fp32": runner[dec] / base[dec],
        "runner_first_token_vs_fp32": runner[ftk] / base[ftk],
        "runner_peak_rss_vs_fp32": runner["peak_rss_bytes"] / base["peak_rss_bytes"],
        "perplexity_vs_fp32": q["perplexity"] / q["reference_perplexity"],
        "size_reduction": size["source_bytes"] / size["model_bytes"],
    }
    for key in [k for k in ("raw", "raw_genai") if k in v]:
        raw = v[key]
        out[f"{key}_decode_vs_fp32"] = raw[dec] / base[dec]
        for who in ("runner", "check"):
            out[f"{who}_vs_{key}_decode"] = v[who][dec] / raw[dec]
            out[f"{who}_vs_{key}_first_token"] = v[who][ftk] / raw[ftk]
            by_round = [v[who]["by_round"], raw["by_round"]]
            rounds = zip(*(r["decode_tokens_per_s"] for r in by_round), strict=True)
            out[f"{who}_vs_{key}_decode_by_round"] = [a / b for a, b in rounds]
        out[f"runner_minus_{key}_first_token_ms"] = runner[ftk] - raw[ftk]
    return out
