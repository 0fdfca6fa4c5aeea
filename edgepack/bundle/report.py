"""report.html beside the bundles: every measured candidate of every target, and the decision.

Per target: quality retention against size on disk (the floor, the measured Pareto front, the
chosen bundle filled and larger, rejected ones hollow, 95 % intervals), peak memory, decode
speed and first-token latency against the budgets (this host's measurement next to the one
prediction for the device, with its interval: the plan's, refined by this host's measurement
where the build made one), and a table of prediction next to measurement with each verdict and
its reasons; a candidate whose speed interval straddles a budget is marked marginal.

write_report takes the build's results as they are: each has `.target` and
`.candidates_measured` (Trial.row dicts) and may have `.budget` (the target's budget dict);
every key beyond format, precision, predicted and measured is optional, and what is absent is
not drawn. One self-contained file: inline SVG and CSS, no scripts, no external resources,
every text escaped; the page is well-formed XML.
"""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from html import escape
from pathlib import Path

from .report_bars import bar_chart
from .report_svg import kind, quality_chart
from .report_tasks import task_table

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0 2em; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; }
th.group { text-align: center; border-left: 1px solid #ddd; }
td.first, th.first { border-left: 1px solid #ddd; }
.name, .verdict { text-align: left; white-space: nowrap; }
td.reasons { text-align: left; color: #555; padding-top: 0; }
tr.why td { border-top: none; }
tr:has(+ tr.why) td { border-bottom: none; }
td { white-space: nowrap; }
tr.chosen td { font-weight: 600; background: #eef6ee; }
tr.error td { background: #fbeeee; }
.muted { color: #666; }
.host { color: #2f5f8f; }
.device { color: #b35c00; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 24px; margin: 0.5em 0; }
svg text { font: 11px system-ui, sans-serif; fill: #222; }
svg text.title { font-weight: 600; font-size: 12px; }
svg text.axis { font-size: 12px; }
svg text.tick, svg text.muted-text { fill: #555; }
svg text.inbar { fill: #fff; }
svg text.chosen-label { fill: #0b5d0b; }
svg text.label { paint-order: stroke; stroke: #fbfbfb; stroke-width: 3px; stroke-linejoin: round; }
svg text.floor-label, svg text.budget-label { fill: #b00020; font-weight: 600; }
svg .plot { fill: #fbfbfb; stroke: #bbb; }
svg .grid { stroke: #e6e6e6; }
svg .floor, svg .budget { stroke: #b00020; stroke-width: 1.5; stroke-dasharray: 6 3; }
svg .front { fill: none; stroke: #e08a00; stroke-width: 2; }
svg .interval { stroke: #555; }
svg .leader { stroke: #999; stroke-width: 0.8; }
svg .point { stroke: #333; stroke-width: 1.2; }
svg .point.chosen { fill: #1b7a1b; stroke: #0b3d0b; stroke-width: 2; }
svg .point.accepted { fill: #7aa7d9; }
svg .point.rejected { fill: #fff; stroke: #777; }
svg .point.error { fill: #fff; stroke: #b00020; stroke-dasharray: 2 1.5; }
svg .bar.host { fill: #4e79a7; }
svg .bar.device { fill: #f28e2b; }
"""

HOST = "this host (measured)"
DEVICE = "predicted for the device (80 % interval)"
FIRST = ' class="first"'  # the first column of a group


def write_report(out: Path, model: str, results) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    tmp = out / f".report.html.{os.getpid()}.tmp"
    tmp.write_text(render(model, results), encoding="utf-8")
    tmp.replace(path)
    return path


def render(model: str, results) -> str:
    sections = "\n".join(
        _section(r.target, list(r.candidates_measured or []), _as_dict(getattr(r, "budget", None)))
        for r in results
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>edgepack: {escape(model)}</title>
<style>{CSS}</style></head><body>
<h1>{escape(model)}</h1>
<p class="muted">Every candidate edgepack exported, validated and measured for each target.
Quality is retention: reference perplexity / candidate perplexity on the evaluation text,
measured in the candidate's own runtime; it and memory carry over to the device. Speeds
<span class="host">measured on this host</span> are the build host's, not the device's; the
<span class="device">device's</span> are predicted (one prediction, with the interval of the
speed model's errors on devices it was not fitted to), and proven by the bundle's check.py on
the device.</p>
{sections}
</body></html>
"""


def _as_dict(budget) -> dict:
    """The budget as a dict: given as one, as a dataclass, or absent (None)."""
    if budget is None:
        return {}
    if is_dataclass(budget):
        return asdict(budget)
    return dict(budget)


def name(row: dict) -> str:
    """A candidate's short name, as its chart label and table row."""
    text = f"{row.get('format', '?')} {row.get('precision', '?')}"
    if row.get("student_layers"):
        text += f" · {row['student_layers']} layers"
    if row.get("device") == "gpu":
        text += " · gpu"
    return text


def _section(target: str, rows: list[dict], budget: dict) -> str:
    names = [name(r) for r in rows]
    chart = quality_chart(rows, names, budget.get("min_quality"), budget.get("disk_gb"))
    if not chart:
        chart = '<p class="muted">No candidate has both a measured size and retention.</p>'
    return f"""<h2>Target {escape(target)}</h2>
{_budget_line(budget)}
{_cost_line(rows)}
{chart}
<div class="charts">{_budget_charts(rows, names, budget)}</div>
{_bases(rows, names)}
{_table(rows, names, budget)}
{task_table(rows, names)}"""


def _budget_line(budget: dict) -> str:
    parts = []
    for key, text in (
        ("memory_gb", "peak memory ≤ {:g} GB"),
        ("accelerator_memory_gb", "accelerator memory ≤ {:g} GB"),
        ("disk_gb", "disk ≤ {:g} GB"),
        ("context_tokens", "context {:g} tokens"),
        ("first_token_ms", "first token ≤ {:g} ms"),
        ("decode_tokens_per_s", "decode ≥ {:g} tokens/s"),
        ("min_quality", "quality retention ≥ {:g}"),
    ):
        if budget.get(key) is not None:
            parts.append(text.format(budget[key]))
    if not parts:
        return '<p class="muted">No budget was recorded for this target.</p>'
    return f"<p>Budget: {escape(', '.join(parts))}.</p>"


def _cost_line(rows: list[dict]) -> str:
    """The chosen candidate's cost per million generated tokens on the target's priced machine,
    at the device's predicted decode (the row's, as the build recorded it)."""
    row = next((r for r in rows if r.get("chosen") and r.get("cost")), None)
    if row is None:
        return ""
    c = row["cost"]
    one = c["single_stream_usd_per_million"]
    text = f"${one:,.2f} per million generated tokens with one stream"
    if c.get("streams", 1) > 1:
        served = c["served_usd_per_million"]
        text += f", ${served:,.3f} at the {c['streams']} streams the runtime sustains"
    return (
        f"<p>Cost of {escape(name(row))} on the device: {escape(text)} "
        f'<span class="muted">(${c["hourly_usd"]:g}/h, {escape(c["instance"])}; '
        f"{escape(c['source'])})</span></p>"
    )


def _measured(row: dict, key: str):
    return (row.get("measured") or {}).get(key)


def _device(row: dict, key: str):
    """The device's predicted figure: the build's refined prediction, else the plan's."""
    device = row.get("device_prediction") or row.get("predicted") or {}
    return device.get(key)


def _span(row: dict, key: str):
    low, high = _device(row, f"{key}_low"), _device(row, f"{key}_high")
    return None if low is None or high is None else (low, high)


def marginal(row: dict, budget: dict) -> list[str]:
    """Why a candidate is marginal: its device interval straddles a latency budget."""
    out = []
    floor, ceiling = budget.get("decode_tokens_per_s"), budget.get("first_token_ms")
    span = _span(row, "decode_tokens_per_s")
    if floor is not None and span and span[0] < floor <= span[1]:
        out.append(
            f"marginal: decode {span[0]:,.1f}–{span[1]:,.1f} tokens/s on the device straddles "
            f"the budget {floor:g}"
        )
    span = _span(row, "first_token_ms")
    if ceiling is not None and span and span[0] <= ceiling < span[1]:
        out.append(
            f"marginal: first token {span[0]:,.0f}–{span[1]:,.0f} ms on the device straddles "
            f"the budget {ceiling:g}"
        )
    return out


def _budget_charts(rows: list[dict], names: list[str], budget: dict) -> str:
    if not rows:
        return ""
    rss = [_measured(r, "peak_rss_bytes") for r in rows]
    mem_budget = budget.get("memory_gb")
    top = max([v for v in rss if v is not None] + [(mem_budget or 0) * 1e9])
    scale, unit = (1e9, "GB") if top >= 1.5e9 else (1e6, "MB")
    charts = [
        bar_chart(
            "Peak memory",
            unit,
            names,
            [("bar host", "peak memory on this host", [_div(v, scale) for v in rss])],
            _div(mem_budget * 1e9, scale) if mem_budget is not None else None,
            "max",
        )
    ]
    for title, unit, key, measured_key, budget_key, direction in (
        ("Decode speed", "tokens/s", "decode_tokens_per_s", "decode_tokens_per_s",
         "decode_tokens_per_s", "min"),
        ("First-token latency, 128-token prompt", "ms", "first_token_ms", "first_token_ms",
         "first_token_ms", "max"),
    ):  # fmt: skip
        series = [
            ("bar host", HOST, [_measured(r, measured_key) for r in rows]),
            ("bar device", DEVICE, [_device(r, key) for r in rows], [_span(r, key) for r in rows]),
        ]
        charts.append(bar_chart(title, unit, names, series, budget.get(budget_key), direction))
    return "\n".join(charts)


def _div(value, scale):
    return None if value is None else value / scale


def _bases(rows: list[dict], names: list[str]) -> str:
    """How the device's speeds were predicted, per candidate, and what the ranking used."""
    head = (
        '<p class="muted">Speeds <span class="host">on this host</span> are measured by each '
        "bundle's own check on the build host."
    )
    bases: dict[str, list[str]] = {}
    models = []
    for r, n in zip(rows, names, strict=True):
        device = r.get("device_prediction") or {}
        basis = device.get("basis") or "the plan's prediction (nothing measured here refined it)"
        bases.setdefault(str(basis), []).append(n)
        if device.get("model") and device["model"] not in models:
            models.append(str(device["model"]))
    ranked = sorted({str(_device(r, "ranked_by")) for r in rows if _device(r, "ranked_by")})
    if ranked:
        head += f" Speed ranking used the {escape(' and the '.join(ranked))}."
    model = f" the speed model, {escape('; '.join(models))}; then" if models else ""
    items = "".join(f"<li>{escape(', '.join(ns))}: {escape(b)}</li>" for b, ns in bases.items())
    return (
        f'{head} <span class="device">Predicted for the device</span> by{model}:</p>'
        f'<ul class="muted bases">{items}</ul>'
    )


def _table(rows: list[dict], names: list[str], budget: dict) -> str:
    if not rows:
        return '<p class="muted">No candidate was measured for this target.</p>'
    speeds = ["device (80 % interval)", "this host"]
    groups = [
        ("quality retention", ["planned", "measured (95 % interval)"]),
        ("peak memory MB", ["planned", "this host"]),
        ("disk MB", ["planned", "measured"]),
        ("decode tokens/s", speeds),
        ("first token ms", speeds),
    ]
    head1 = '<tr><th class="name" rowspan="2">candidate</th><th class="verdict" rowspan="2">'
    head1 += "verdict</th>" + "".join(
        f'<th class="group" colspan="{len(cols)}">{escape(g)}</th>' for g, cols in groups
    )
    head2 = "<tr>" + "".join(
        f"<th{FIRST if i == 0 else ''}>{escape(c)}</th>"
        for _, cols in groups
        for i, c in enumerate(cols)
    )
    width = 2 + sum(len(cols) for _, cols in groups)
    body = [_row(r, n, budget, width) for r, n in zip(rows, names, strict=True)]
    note = (
        '<p class="muted">device: the one prediction for '
        "the device (the speed model fitted to published llama.cpp measurements, refined by "
        "this host's measurement where the build made one), with the 10th to 90th percentile "
        "of the model's errors on devices it was not fitted to; this host: measured by the "
        "bundle's check on the build host.</p>"
    )
    return (
        f"<table><thead>{head1}</tr>{head2}</tr></thead><tbody>{''.join(body)}</tbody>"
        f"</table>{note}"
    )


def _row(r: dict, row_name: str, budget: dict, width: int) -> str:
    p, m = r.get("predicted") or {}, r.get("measured") or {}
    k = kind(r)
    reasons = list(r.get("reasons") or [])
    if r.get("status") in ("fail", "not checked"):
        reasons.append(f"bundle check on this host: {r['status']}")
    if r.get("fallback_for"):
        reasons.append(f"mixed-precision variant standing in for {r['fallback_for']}")
    reasons += [m for m in marginal(r, budget) if m not in reasons]
    interval = ""
    if m.get("retention_low") is not None and m.get("retention_high") is not None:
        interval = f" ({m['retention_low']:.3f}–{m['retention_high']:.3f})"

    def speeds(key: str, spec: str) -> list[str]:
        device = _f(_device(r, key), spec)
        span = _span(r, key)
        if span:
            device += f" ({format(span[0], spec)}–{format(span[1], spec)})"
        return [device, _f(m.get(key), spec)]

    groups = [
        [_f(p.get("quality"), ".3f"), _f(m.get("retention"), ".4f") + interval],
        [_f(p.get("memory_bytes"), ",.0f", 1e6), _f(m.get("peak_rss_bytes"), ",.0f", 1e6)],
        [_f(p.get("disk_bytes"), ",.1f", 1e6), _f(m.get("disk_bytes"), ",.1f", 1e6)],
        speeds("decode_tokens_per_s", ",.1f"),
        speeds("first_token_ms", ",.0f"),
    ]
    tds = "".join(
        f"<td{FIRST if i == 0 else ''}>{escape(c)}</td>" for g in groups for i, c in enumerate(g)
    )
    span = len(reasons) and 1
    out = (
        f'<tr class="{k}"><td class="name" rowspan="{1 + span}">{escape(row_name)}</td>'
        f'<td class="verdict">{escape(k)}</td>{tds}</tr>'
    )
    if reasons:
        out += (
            f'<tr class="{k} why"><td class="reasons" colspan="{width - 1}">'
            f"{escape('; '.join(reasons))}</td></tr>"
        )
    return out


def _f(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)
