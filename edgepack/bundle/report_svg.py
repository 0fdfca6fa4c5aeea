"""The SVG of report.html: primitives, scales, label placement and the quality chart.

No fonts are measured here: text is estimated at CHAR_W px per character at FONT px, and a
label's box is that width by ASCENT + DESCENT around its baseline. Labels are placed so that
those boxes never meet. Every SVG is well-formed XML (it parses with xml.etree).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from html import escape

FONT = 11
CHAR_W = 6.5
ASCENT = 10  # a label's box reaches this far above its baseline ...
DESCENT = 3  # ... and this far below it
GAP = 2  # the least room between two label boxes
SVG_NS = "http://www.w3.org/2000/svg"

# the quality chart: width, margins around the plot, plot height
QW, QL, QR, QT, QH = 820, 68, 24, 14, 320


def text_width(text: str) -> float:
    return CHAR_W * len(text)


def short(text: str, n: int = 28) -> str:
    """`text` cut to n characters, an ellipsis marking the cut (the full text goes in a title)."""
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def intersects(self, o: Box, margin: float = 0.0) -> bool:
        return (
            self.x0 < o.x1 + margin
            and o.x0 - margin < self.x1
            and self.y0 < o.y1 + margin
            and o.y0 - margin < self.y1
        )

    def inside(self, o: Box) -> bool:
        return o.x0 <= self.x0 and self.x1 <= o.x1 and o.y0 <= self.y0 and self.y1 <= o.y1


def text_box(x: float, baseline: float, text: str, anchor: str = "start") -> Box:
    w = text_width(text)
    left = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
    return Box(left, baseline - ASCENT, left + w, baseline + DESCENT)


@dataclass(frozen=True)
class Label:
    text: str
    x: float
    y: float  # baseline
    anchor: str
    box: Box


def place_labels(
    anchors: list[tuple[float, float, float, str]],
    bounds: Box,
    fixed: list[Box] = (),
    markers: list[Box] = (),
    lines: list[Box] = (),
) -> list[Label | None]:
    """One label per anchor (px, py, marker radius, text), taken in the order given: beside its
    point, to the right where it fits inside `bounds`, else to the left, at the height nearest
    the point's where its box meets no box placed before it (`fixed` ones included) and, where
    there is room for that, no other point's marker (`markers[i]` is anchor i's) and none of
    `lines` (boxes round drawn segments). None where there is no room at all. Deterministic:
    the same anchors give the same labels."""
    placed = list(fixed)
    labels: list[Label | None] = []
    for i, (px, py, r, text) in enumerate(anchors):
        others = [m for j, m in enumerate(markers) if j != i] + list(lines)
        label = _nearest(px, py, r, text, bounds, placed + others)
        if label is None:
            label = _nearest(px, py, r, text, bounds, placed)
        if label is not None:
            placed.append(label.box)
        labels.append(label)
    return labels


def _nearest(px, py, r, text, bounds: Box, avoid: list[Box]) -> Label | None:
    w, h = text_width(text), ASCENT + DESCENT
    want = py - (ASCENT + DESCENT) / 2  # the top that centres the box on the point
    best = None
    for anchor, penalty in (("start", 0.0), ("end", 10.0)):
        x = px + r + 4 if anchor == "start" else px - r - 4
        left = x if anchor == "start" else x - w
        if left < bounds.x0 or left + w > bounds.x1:
            continue
        column = [b for b in avoid if b.x0 < left + w and left < b.x1]
        tops = {want, bounds.y0, bounds.y1 - h}
        for b in column:
            tops |= {b.y0 - GAP - h, b.y1 + GAP}
        for top in sorted(tops):
            box = Box(left, top, left + w, top + h)
            if not box.inside(bounds) or any(box.intersects(b, GAP / 2) for b in column):
                continue
            cost = abs(top - want) + penalty
            if best is None or cost < best[0]:
                best = (cost, Label(text, x, top + ASCENT, anchor, box))
    return best[1] if best else None


def fitting_ticks(lo: float, hi: float, length: float, n: int = 6) -> list[float]:
    """nice_ticks with as many ticks as fit along `length` px without their labels meeting."""
    while True:
        ticks = nice_ticks(lo, hi, n)
        widest = max(text_width(tick_text(v, ticks)) for v in ticks)
        if n <= 2 or (len(ticks) - 1) * (widest + 10) <= length:
            return ticks
        n -= 1


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    start, end = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(start, end + 1)]


def tick_text(v: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(round(step * 10**digits) - step * 10**digits) > 1e-6:
        digits += 1
    return f"{v:,.{digits}f}"


def t(x: float, y: float, text: str, cls: str = "", anchor: str = "start", extra: str = "") -> str:
    a = f' class="{cls}"' if cls else ""
    a += f' text-anchor="{anchor}"' if anchor != "start" else ""
    return f'<text x="{x:.1f}" y="{y:.1f}"{a}{extra}>{escape(text)}</text>'


def line(x1, y1, x2, y2, cls: str) -> str:
    return f'<line class="{cls}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"/>'


def svg(width: float, height: float, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="{SVG_NS}" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}">'
        + "\n".join(body)
        + "</svg>"
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (size, retention) points that no other point dominates: none is at most
    as large and at least as good, and strictly better in one of the two."""
    return [
        i
        for i, (s, q) in enumerate(points)
        if not any(s2 <= s and q2 >= q and (s2 < s or q2 > q) for s2, q2 in points)
    ]


def legend(items: list[tuple[str, str]], x0: float, y: float, width: float) -> tuple[list, float]:
    """(SYMBOLS key, text) pairs in rows from (x0, y), wrapped at `width`; returns the SVG and
    the baseline of the last row."""
    out, x = [], x0
    for key, text in items:
        w = 22 + text_width(text) + 16
        if x > x0 and x + w > width:
            x, y = x0, y + 18
        if key in SYMBOLS:
            out.append(f'<g transform="translate({x:.1f},{y - 4:.1f})">{SYMBOLS[key]}</g>')
        out.append(t(x + 22, y, text, "legend"))
        x += w
    return out, y


SYMBOLS = {
    "chosen": '<circle class="point chosen" cx="8" cy="0" r="7.5"/>',
    "accepted": '<circle class="point accepted" cx="8" cy="0" r="5"/>',
    "rejected": '<circle class="point rejected" cx="8" cy="0" r="5"/>',
    "error": '<circle class="point error" cx="8" cy="0" r="5"/>',
    "front": '<line class="front" x1="0" y1="0" x2="16" y2="0"/>',
    "floor": '<line class="floor" x1="0" y1="0" x2="16" y2="0"/>',
    "interval": '<line class="interval" x1="8" y1="-6" x2="8" y2="6"/>',
    "disk": '<line class="budget" x1="8" y1="-7" x2="8" y2="7"/>',
    "host": '<rect class="bar host" x="0" y="-5" width="16" height="10"/>',
    "device": '<rect class="bar device" x="0" y="-5" width="16" height="10"/>',
}
RADIUS = {"chosen": 7.5, "accepted": 5.0, "rejected": 5.0, "error": 5.0}
KINDS = (
    ("chosen", "chosen bundle"),
    ("accepted", "meets every budget, not chosen"),
    ("rejected", "rejected (reasons in the table)"),
    ("error", "failed (reasons in the table)"),
)


def kind(row: dict) -> str:
    if row.get("status") == "error":
        return "error"
    if row.get("chosen"):
        return "chosen"
    return "accepted" if row.get("accepted", not row.get("reasons")) else "rejected"


def quality_chart(
    rows: list[dict], names: list[str], min_quality: float | None, disk_budget_gb: float | None
) -> str:
    """Retention (y) against size on disk (x) for every measured row: the floor, the measured
    Pareto front as a step line, the chosen bundle filled and larger, rejected ones hollow,
    95 % intervals as error bars, every point labelled with its name. '' when nothing has both
    a size and a retention."""
    pts = []
    for row, name in zip(rows, names, strict=True):
        m = row.get("measured") or {}
        if m.get("retention") is not None and m.get("disk_bytes") is not None:
            pts.append((row, name, m))
    if not pts:
        return ""
    sizes = [m["disk_bytes"] for _, _, m in pts]
    scale, unit = (1e9, "GB") if max(sizes) >= 1e10 else (1e6, "MB")
    xs = [s / scale for s in sizes]
    span = max(xs) - min(xs)
    pad = max(0.1 * span, 0.01 * max(xs), 1e-6)
    xt = fitting_ticks(max(0.0, min(xs) - pad), max(xs) + pad, QW - QL - QR)
    disk_x = disk_budget_gb * 1e9 / scale if disk_budget_gb is not None else None
    lows = [m["retention"] if m.get("retention_low") is None else m["retention_low"]
            for _, _, m in pts]  # fmt: skip
    highs = [m["retention"] if m.get("retention_high") is None else m["retention_high"]
             for _, _, m in pts]  # fmt: skip
    lo = min(lows + ([min_quality] if min_quality is not None else []))
    hi = max(highs)
    lo, hi = min(lo, hi - 0.02), max(hi, min(lo + 0.02, 1.0))
    pad = 0.05 * (hi - lo)
    yt = nice_ticks(lo - pad, min(hi + pad, max(hi, 1.0)))  # retention is capped at 1
    px0, px1, py0, py1 = QL, QW - QR, QT, QT + QH
    bounds = Box(px0, py0, px1, py1)

    def sx(v):
        return px0 + (v - xt[0]) / (xt[-1] - xt[0]) * (px1 - px0)

    def sy(v):
        return py1 - (v - yt[0]) / (yt[-1] - yt[0]) * (py1 - py0)

    body = [f'<rect class="plot" x="{px0}" y="{py0}" width="{px1 - px0}" height="{QH}"/>']
    for v in xt:
        body.append(line(sx(v), py0, sx(v), py1, "grid"))
        body.append(t(sx(v), py1 + 16, tick_text(v, xt), "tick", "middle"))
    for v in yt:
        body.append(line(px0, sy(v), px1, sy(v), "grid"))
        body.append(t(px0 - 6, sy(v) + 4, tick_text(v, yt), "tick ytick", "end"))
    body.append(t((px0 + px1) / 2, py1 + 36, f"bundle size on disk ({unit})", "axis", "middle"))
    ymid = (py0 + py1) / 2
    body.append(
        t(18, ymid, "quality retention (1.0 = the fp32 reference)", "axis", "middle",
          f' transform="rotate(-90 18 {ymid:.1f})"')
    )  # fmt: skip
    fixed, items, rules = [], [], []  # rules: the floor's and the budget's lines
    if min_quality is not None:
        y = sy(min_quality)
        body.append(line(px0, y, px1, y, "floor"))
        rules.append(Box(px0, y - 1, px1, y + 1))
        text = f"floor {min_quality:g}"
        base = y - 4 if y - 4 - ASCENT >= py0 else y + 4 + ASCENT
        fixed.append(text_box(px0 + 6, base, text))
        body.append(t(px0 + 6, base, text, "label floor-label"))
        items.append(("floor", f"quality floor ({min_quality:g})"))
    if disk_x is not None and xt[0] <= disk_x <= xt[-1]:
        x = sx(disk_x)
        body.append(line(x, py0, x, py1, "budget"))
        rules.append(Box(x - 1, py0, x + 1, py1))
        text = f"disk budget {disk_budget_gb:g} GB"
        anchor, lx = ("end", x - 4) if x - 4 - text_width(text) >= px0 else ("start", x + 4)
        fixed.append(text_box(lx, py0 + 14, text, anchor))
        body.append(t(lx, py0 + 14, text, "label budget-label", anchor))
        items.append(("disk", "disk budget"))
    ok = [i for i, (r, _, _) in enumerate(pts) if kind(r) != "error"]
    front = [ok[j] for j in pareto_front([(pts[i][2]["disk_bytes"], pts[i][2]["retention"])
                                          for i in ok])]  # fmt: skip
    corners = []
    for i in sorted(front, key=lambda i: (pts[i][2]["disk_bytes"], pts[i][2]["retention"])):
        x, y = sx(pts[i][2]["disk_bytes"] / scale), sy(pts[i][2]["retention"])
        if corners:
            corners.append((x, corners[-1][1]))
        corners.append((x, y))
    if len(corners) > 1:
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in corners)
        body.append(f'<polyline class="front" points="{coords}"/>')
        items.append(("front", "measured Pareto front (nothing smaller keeps more quality)"))
    anchors, markers, marks = [], [], []
    for i, (row, name, m) in enumerate(pts):
        k = kind(row)
        x, y, r = sx(m["disk_bytes"] / scale), sy(m["retention"]), RADIUS[k]
        low, high = m.get("retention_low"), m.get("retention_high")
        if low is not None and high is not None:
            body.append(line(x, sy(low), x, sy(high), "interval"))
            body.append(line(x - 3, sy(low), x + 3, sy(low), "interval"))
            body.append(line(x - 3, sy(high), x + 3, sy(high), "interval"))
            if ("interval", "95 % interval of retention") not in items:
                items.append(("interval", "95 % interval of retention"))
        cls = f"point {k}" + (" front" if i in front else "")
        tip = f"{name}: retention {m['retention']:.4f}, {m['disk_bytes'] / 1e6:,.1f} MB"
        marks.append(
            f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="{r}">'
            f"<title>{escape(tip)}</title></circle>"
        )
        anchors.append((x, y, r, short(name)))
        top, bottom = (sy(high), sy(low)) if low is not None and high is not None else (y, y)
        markers.append(Box(x - r - 1, min(y - r, top) - 1, x + r + 1, max(y + r, bottom) + 1))
    order = sorted(range(len(pts)), key=lambda i: (kind(pts[i][0]) != "chosen", *anchors[i][1::-1]))
    segments = [
        Box(min(xa, xb) - 1, min(ya, yb) - 1, max(xa, xb) + 1, max(ya, yb) + 1)
        for (xa, ya), (xb, yb) in itertools.pairwise(corners)
    ]
    placed = place_labels(
        [anchors[i] for i in order], bounds, fixed, [markers[i] for i in order], segments + rules
    )
    missing = 0
    for i, label in zip(order, placed, strict=True):
        if label is None:
            missing += 1
            continue
        x, y, r, _ = anchors[i]
        cy = (label.box.y0 + label.box.y1) / 2
        if abs(cy - y) > r:
            edge = label.box.x0 - 1 if label.anchor == "start" else label.box.x1 + 1
            body.append(line(x, y, edge, cy, "leader"))
        cls = "label point-label" + (" chosen-label" if kind(pts[i][0]) == "chosen" else "")
        body.append(t(label.x, label.y, label.text, cls, label.anchor))
    body.extend(marks)
    kinds = {kind(r) for r, _, _ in pts}
    items = [(k, text) for k, text in KINDS if k in kinds] + items
    if missing:
        items.append(("", f"{missing} label(s) left out for room: see the table"))
    leg, last = legend(items, px0, py1 + 60, QW - 8)
    body.extend(leg)
    return svg(QW, last + 12, "bundle size against quality retention", body)
