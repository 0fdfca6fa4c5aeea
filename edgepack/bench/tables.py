"""tools/bench.py's tables: the text it prints for a benchmark result (see tools/bench.py)."""

from __future__ import annotations

COLUMNS = "decode tok/s", "first tok ms", "peak RSS MB", "cold s", "disk MB", "perplexity"
LEGEND = (
    "  cold s: imports + load + the warm-up generation (check.py: its load); same tok: greedy "
    "tokens equal to fp32's before the first difference; threads: as the runtime reports them "
    "(llama.cpp: n_threads/n_threads_batch; rt: the runtime's own default); prompt: the prompt "
    "tokens each run processed, as the runtime reports them\n"
    "  * the raw runtime and check.py run the runner's artifact: the same logits and perplexity; "
    "check.py times its own cold {}-token prompts, {} new tokens"
)


def _threads(value) -> str:
    if isinstance(value, dict):  # llama.cpp: n_threads/n_threads_batch
        return "/".join(str(x) for x in value.values())
    return str(value) if value else "rt"


def _span(values: list) -> str:
    known = [x for x in values if x is not None]
    lo, hi = (min(known), max(known)) if known else (None, None)
    return "-" if lo is None else str(lo) if lo == hi else f"{lo}-{hi}"


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(entry: dict, s: dict) -> str:
    v, q, size, r = entry["variants"], entry["quality"], entry["size"], entry["ratios"]
    mb = 1e6
    lines = [
        f"{entry['name']}: {entry['format']} {entry['precision']} on {entry['runtime']}  "
        f"({entry['bundle']})",
        f"  {'variant':<34}"
        + "".join(f"{c:>{len(c) + 1}}" for c in COLUMNS)
        + f"{'same tok':>10}{'threads':>8}{'prompt':>8}",
    ]
    warnings = []
    for key, fig in v.items():
        disk = size["source_bytes"] if key == "baseline" else size["model_bytes"]
        ppl = q["reference_perplexity"] if key == "baseline" else q["perplexity"]
        mark = " " if key in ("baseline", "runner") else "*"
        same = fig.get("same_tokens_as_fp32")
        same = {"baseline": "ref", "check": "-"}.get(key) or f"{same}/{s['new_tokens']}"
        fed = fig["prompt_tokens_processed"]
        lines.append(
            f"  {fig['label']:<34}{fig['decode_tokens_per_s_p50']:>13.1f}"
            f"{fig['first_token_ms_p50']:>13.1f}{fig['peak_rss_bytes'] / mb:>12.0f}"
            f"{fig['load_s'] + fig['warmup_s']:>7.2f}{disk / mb:>8.0f}{ppl:>10.3f}{mark}{same:>10}"
            f"{_threads(fig.get('threads')):>8}{_span(fed):>8}"
        )
        given = fig.get("prompt_tokens") or s["prompt_tokens"]
        short = [x for x in fed if x is not None and x != given]
        if short:
            warnings.append(
                f"  WARNING {fig['label']} processed {short} prompt tokens of {given}: it reused "
                "a cached prefix; those first tokens are not cold"
            )
    lines += [f"    {fig['label']}: {fig['api']}" for fig in v.values()]
    lines.append(LEGEND.format(s["check_prompt_tokens"], s["check_new_tokens"]))
    if (s["prompt_tokens"], s["new_tokens"]) != (s["check_prompt_tokens"], s["check_new_tokens"]):
        lines.append(
            f"  NOTE this run's {s['prompt_tokens']}-token prompts and {s['new_tokens']} new "
            "tokens are not check.py's: compare check with raw at the defaults"
        )
    raws = [k for k in ("raw", "raw_genai") if k in v]
    lines.append(
        f"  RATIOS  decode vs fp32: runner {r['runner_decode_vs_fp32']:.2f}x"
        + "".join(f", {v[k]['label']} {r[f'{k}_decode_vs_fp32']:.2f}x" for k in raws)
    )
    for k, who in ((k, who) for k in raws for who in ("runner", "check")):
        by_round = r.get(f"{who}_vs_{k}_decode_by_round") or []
        lines.append(
            f"          {who} vs {v[k]['label']}: decode {r[f'{who}_vs_{k}_decode']:.2f}x, "
            f"first token {r[f'{who}_vs_{k}_first_token']:.2f}x"
            + (f" ({r[f'runner_minus_{k}_first_token_ms']:+.1f} ms)" if who == "runner" else "")
            + (
                f"; decode by round {' '.join(f'{x:.2f}' for x in by_round)}"
                if len(by_round) > 1
                else ""
            )
        )
    lines.append(
        f"          perplexity vs fp32: {r['perplexity_vs_fp32']:.4f}x "
        f"({q['perplexity']:.3f} vs {q['reference_perplexity']:.3f}; retention "
        f"{q['retention']:.4f}, KL {q['kl_divergence_mean']:.4f}, top-1 "
        f"{q['top1_agreement']:.1%} over {q['eval_tokens']} scored tokens)"
    )
    lines.append(
        f"          size: {r['size_reduction']:.2f}x smaller ({size['model_bytes'] / mb:.0f} MB "
        f"model/ vs {size['source_bytes'] / mb:.0f} MB safetensors); peak memory "
        f"{r['runner_peak_rss_vs_fp32']:.2f}x fp32"
    )
    return "\n".join(lines + warnings + calibration_table(entry["calibration"]))


def calibration_table(cal: dict) -> list[str]:
    """Decode, first token and memory: predicted before calibration, after it, and measured."""
    head = f"  BEFORE AND AFTER CALIBRATION for {cal['target']}"
    lines = [f"{head:<58}{'decode tok/s':>13}{'first tok ms':>13}{'memory MB':>11}"]
    prior = 'manifest "predicted"' if cal["prior"]["source"] == "manifest" else "the planner"
    rows = (
        (f"prior: {prior}", cal["prior"]),
        ('calibrated at build: manifest "device_prediction"', cal["build"]),
        ("calibrated from this run's check.py", cal["calibrated"]),
        ("measured here by the bundle's check.py", cal["measured"]),
    )
    for label, row in rows:
        if not row or "skipped" in row:
            why = row["skipped"] if row else "none for this target"
            lines.append(f"    {label:<54}- ({why})")
            continue
        memory = row.get("memory_bytes")
        lines.append(
            f"    {label:<54}{_num(row['decode_tokens_per_s']):>13}"
            f"{_num(row['first_token_ms']):>13}{_num(memory and memory / 1e6, 0):>11}"
        )
        if row.get("basis"):
            lines.append(f"      basis: {row['basis']}")
    return lines


def report_text(result: dict) -> str:
    s, h, e = result["settings"], result["host"], result["eval"]
    lines = [
        f"edgepack bench: {s['prompt_tokens']}-token prompt, {s['new_tokens']} new tokens "
        f"(greedy), warm-up then {s['repetitions']} repetitions, p50; cold prompts; "
        f"{s['threads'] or 'default'} threads ({s['threads_from']})",
        f"host: {h['cpu']}, {h['cores']} cores, {h['os']}; load average "
        f"{h['load_average_1m'][0]:.1f} before, {h['load_average_1m'][1]:.1f} after",
        f"evaluation text: {e['source']} (first {e['max_tokens']} tokens at most)",
        "",
    ]
    for entry in result["bundles"]:
        lines += [table(entry, s), ""]
    return "\n".join(lines).rstrip() + "\n"


