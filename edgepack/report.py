"""report.html beside the bundles: every measured candidate of every target, at a glance.

Per target: a chart of size on disk against measured quality retention (each point labelled
with its decode speed on the build host; the chosen one filled, rejected ones hollow), and a
table of prediction next to measurement. One self-contained file: inline SVG, no scripts.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

W, H, PAD = 560, 320, 56


def write_report(out: Path, model: str, results) -> Path:
    sections = [_section(r.target, r.candidates_measured) for r in results]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgepack: {html.escape(model)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0 2em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.chosen td {{ font-weight: 600; background: #eef6ee; }}
.muted {{ color: #777; }}
svg text {{ font: 11px system-ui, sans-serif; }}
</style></head><body>
<h1>{html.escape(model)}</h1>
<p class="muted">Every candidate edgepack exported, validated and measured on the build host.
Quality is retention: reference perplexity / candidate perplexity on the evaluation text,
measured in the candidate's own runtime. Speeds and memory are this host's, not the device's.</p>
{"".join(sections)}
</body></html>
"""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    tmp = out / f".report.html.{os.getpid()}.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def _section(target: str, rows: list[dict]) -> str:
    return f"""<h2>Target {html.escape(target)}</h2>
{_chart(rows)}
{_table(rows)}"""


def _chart(rows: list[dict]) -> str:
    points = [
        (r["measured"]["disk_bytes"] / 1e6, r["measured"]["retention"], r)
        for r in rows
        if r["measured"]["retention"] is not None
    ]
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = 0.0, max(xs) * 1.15
    y0, y1 = min(min(ys) - 0.02, 0.9), 1.005

    def sx(x):
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def sy(y):
        return H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)

    marks = []
    for x, y, r in points:
        speed = r["measured"]["decode_tokens_per_s"]
        label = f"{r['format']} {r['precision']}" + (f", {speed:.0f} tok/s" if speed else "")
        fill = "#2a7a2a" if r["chosen"] else ("#ffffff" if not r["accepted"] else "#7aa7d9")
        marks.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="{fill}" '
            f'stroke="#333"><title>{html.escape(label)}</title></circle>'
            f'<text x="{sx(x) + 9:.1f}" y="{sy(y) + 4:.1f}">{html.escape(label)}</text>'
        )
    ticks = []
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        ticks.append(
            f'<text x="{sx(xv):.1f}" y="{H - PAD + 16}" text-anchor="middle">{xv:.0f}</text>'
            f'<text x="{PAD - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3f}</text>'
        )
    return f"""<svg width="{W}" height="{H}" role="img" aria-label="size against quality">
<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="#fafafa"
 stroke="#bbb"/>
{"".join(ticks)}
<text x="{W / 2}" y="{H - 12}" text-anchor="middle">size on disk (MB)</text>
<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">quality
retention</text>
{"".join(marks)}
</svg>"""


def _table(rows: list[dict]) -> str:
    head = (
        "<tr><th>candidate</th><th>quality (pred / meas)</th><th>perplexity</th>"
        "<th>memory MB (pred / meas)</th><th>disk MB</th><th>decode tok/s (pred / here)</th>"
        "<th>first token ms (pred / here)</th><th>verdict</th></tr>"
    )
    body = []
    for r in rows:
        p, m = r["predicted"], r["measured"]
        student = f", {r['student_layers']}-layer student" if r["student_layers"] else ""
        verdict = "chosen" if r["chosen"] else ("accepted" if r["accepted"] else "rejected")
        if r["reasons"]:
            verdict += ": " + "; ".join(r["reasons"])
        body.append(
            f'<tr class="{"chosen" if r["chosen"] else ""}">'
            f"<td>{html.escape(r['format'])} {html.escape(r['precision'])}{student}</td>"
            f"<td>{p['quality']:.3f} / {_f(m['retention'], '.4f')}</td>"
            f"<td>{_f(m['perplexity'], '.2f')}</td>"
            f"<td>{p['memory_bytes'] / 1e6:,.0f} / {_f(m['peak_rss_bytes'], ',.0f', 1e6)}</td>"
            f"<td>{m['disk_bytes'] / 1e6:,.1f}</td>"
            f"<td>{_f(p['decode_tokens_per_s'], ',.1f')} / {_f(m['decode_tokens_per_s'], ',.1f')}"
            f"</td><td>{p['first_token_ms']:,.0f} / {_f(m['first_token_ms'], ',.0f')}</td>"
            f"<td>{html.escape(verdict)}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _f(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)
