"""The bar charts of report.html: a value per candidate and series, against a budget.

Built from report_svg's primitives; one self-contained SVG per chart, well-formed XML.
"""

from __future__ import annotations

import math
from html import escape

from .report_svg import fitting_ticks, legend, line, short, svg, t, text_width, tick_text


def bar_chart(
    title: str,
    unit: str,
    names: list[str],
    series: list[tuple],
    budget: float | None,
    budget_kind: str,
) -> str:
    """Horizontal bars per candidate, one per series (css class, legend text, values in
    `unit`, None for not measured; optionally a fourth item, each value's (low, high) interval,
    drawn as a whisker across the bar's end), and the budget as a vertical line: a ceiling
    ("max") or a floor ("min")."""
    values = [v for _, _, vs, *_ in series for v in vs if v is not None]
    values += [b for *_, spans in (s for s in series if len(s) > 3) for sp in spans if sp
               for b in sp if b is not None]  # fmt: skip
    if not values:
        return ""
    bar, inner, group_gap, width = 10, 1, 9, 360
    cats = [short(n, 22) for n in names]
    x0 = max([text_width(c) for c in cats] + [40]) + 12
    top_value = max(values + ([budget] if budget is not None else [])) * 1.05
    xt = fitting_ticks(0.0, top_value, width - x0 - 30)
    x1 = width - 6 - text_width(tick_text(xt[-1], xt)) / 2

    def sx(v):
        return x0 + v / xt[-1] * (x1 - x0)

    body = [t(4, 14, title, "title")]
    leg, y = legend([(s[0].split()[-1], s[1]) for s in series], 4, 32, width)
    body.extend(leg)
    if budget is not None:
        y += 16
        text = f"budget {'≤' if budget_kind == 'max' else '≥'} {budget:g} {unit}"
        bx = min(max(sx(budget), 4 + text_width(text) / 2), width - 4 - text_width(text) / 2)
        body.append(t(bx, y, text, "budget-label", "middle"))
    top = y + 8
    group = len(series) * (bar + inner) - inner + group_gap
    bottom = top + group * len(names)
    body.append(
        f'<rect class="plot" x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0:.1f}" '
        f'height="{bottom - top:.1f}"/>'
    )
    for v in xt:
        body.append(line(sx(v), top, sx(v), bottom, "grid"))
        body.append(t(sx(v), bottom + 14, tick_text(v, xt), "tick", "middle"))
    body.append(t((x0 + x1) / 2, bottom + 30, unit, "axis", "middle"))
    smallest = min([v for v in values if v > 0] or [1.0])  # two significant digits at least
    digits = min(3, max(0, 1 - math.floor(math.log10(smallest))))
    for g, name in enumerate(names):
        gy = top + group_gap / 2 + g * group
        cat = t(x0 - 6, gy + group / 2 - group_gap / 2 + 4, cats[g], "cat", "end")
        body.append(f"<g><title>{escape(name)}</title>{cat}</g>")
        for s, (cls, text, vs, *spans) in enumerate(series):
            by, v = gy + s * (bar + inner), vs[g]
            span = spans[0][g] if spans and spans[0][g] else None
            if v is None:
                body.append(t(x0 + 4, by + bar - 1, "not measured", "muted-text"))
                continue
            w = sx(v) - x0
            body.append(
                f'<rect class="{cls}" x="{x0:.1f}" y="{by:.1f}" width="{w:.1f}" height="{bar}">'
                f"<title>{escape(f'{name}, {text}: {v:,.{digits}f} {unit}')}</title></rect>"
            )
            value = f"{v:,.{digits}f}"
            edge = sx(v)
            if span and None not in span:
                lo, hi = sx(span[0]), sx(span[1])
                mid = by + bar / 2
                body.append(line(lo, mid, hi, mid, "interval"))
                body.append(line(lo, by, lo, by + bar, "interval"))
                body.append(line(hi, by, hi, by + bar, "interval"))
                value += f" ({span[0]:,.{digits}f}–{span[1]:,.{digits}f})"
                edge = max(edge, hi)
            plain = f"{v:,.{digits}f}"
            if edge + 4 + text_width(value) <= width - 2:
                body.append(t(edge + 4, by + bar - 1, value, "value"))
            elif edge + 4 + text_width(plain) <= width - 2:
                body.append(t(edge + 4, by + bar - 1, plain, "value"))
            else:  # inside the bar, from its start: clear of the whisker at its end
                body.append(t(x0 + 4, by + bar - 1, plain, "value inbar"))
    if budget is not None:
        body.append(line(sx(budget), top - 4, sx(budget), bottom, "budget"))
    return svg(width, bottom + 40, title, body)
