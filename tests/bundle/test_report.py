"""report.html: the decision drawn from the build's rows (unit tier: no backend, no model)."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from types import SimpleNamespace

from edgepack.bundle import report_svg
from edgepack.bundle.report import render, write_report
from edgepack.bundle.report_svg import Box, pareto_front, place_labels
from tests.bundle.rows import BUDGET, make_row, result

S = "{http://www.w3.org/2000/svg}"
CHAR_W, ASCENT, DESCENT = 6.5, 10, 3  # 11 px text: ~6.5 px a character, the box round its line
def page_of(rows, budget=BUDGET, target="edge-4gb", model="SmolLM2-135M-Instruct"):
    return ET.fromstring(render(model, [result(target, rows, budget)]))


def svgs(root):
    return list(root.iter(f"{S}svg"))


def classes(el):
    return set((el.get("class") or "").split())


def points(svg):
    """{candidate name: circle} of the quality chart (the name leads each circle's title)."""
    out = {}
    for c in svg.iter(f"{S}circle"):
        title = c.find(f"{S}title")
        if title is not None:
            out[title.text.split(":")[0]] = c
    return out


def label_boxes(svg):
    boxes = []
    for el in svg.iter(f"{S}text"):
        if "label" not in classes(el):
            continue
        x, y, text = float(el.get("x")), float(el.get("y")), el.text
        w = CHAR_W * len(text)
        left = {"start": x, "middle": x - w / 2, "end": x - w}[el.get("text-anchor", "start")]
        boxes.append((text, Box(left, y - ASCENT, left + w, y + DESCENT)))
    return boxes


def texts(svg):
    return ["".join(el.itertext()) for el in svg.iter(f"{S}text")]


def test_estimate_is_pinned():
    assert (report_svg.CHAR_W, report_svg.ASCENT, report_svg.DESCENT) == (CHAR_W, ASCENT, DESCENT)
    assert report_svg.FONT == 11


def test_page_is_well_formed_and_self_contained(tmp_path):
    rows = [
        make_row("gguf", "q8_0", 145, 0.991, chosen=True, interval=0.006, device=(22, 900)),
        make_row("gguf", "q4_k_m", 105, 0.952, interval=0.006, device=(30, 850)),
    ]
    path = write_report(tmp_path, "SmolLM2", [result("edge-4gb", rows, BUDGET)])
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text)  # the whole page is well-formed XML
    assert root.tag == "html"
    lowered = text.lower()
    for banned in ("<script", "<link", "<img", "src=", "href=", "@import", "url("):
        assert banned not in lowered
    assert "http" not in lowered.replace("http://www.w3.org/2000/svg", "")
    charts = svgs(root)
    assert len(charts) == 4  # quality, memory, decode, first token
    for svg in charts:
        assert float(svg.get("width")) > 0 and float(svg.get("height")) > 0


def test_floor_line_sits_at_min_quality():
    rows = [
        make_row("gguf", "q4_0", 95, 0.90, accepted=True),  # exactly on the floor
        make_row("gguf", "q8_0", 145, 0.99, chosen=True),
        make_row("onnx", "int4", 120, 0.80, accepted=False, reasons=["below the floor"]),
    ]
    chart = svgs(page_of(rows))[0]
    floors = [el for el in chart.findall(f"{S}line") if "floor" in classes(el)]  # not legend
    assert len(floors) == 1
    y = float(floors[0].get("y1"))
    assert float(floors[0].get("y2")) == y
    pts = points(chart)
    assert abs(float(pts["gguf q4_0"].get("cy")) - y) < 0.11
    assert float(pts["gguf q8_0"].get("cy")) < y < float(pts["onnx int4"].get("cy"))
    assert "floor 0.9" in texts(chart)
    # the line spans the plot, not the whole chart
    assert float(floors[0].get("x1")) > 0 and float(floors[0].get("x2")) < float(chart.get("width"))


FRONT_TABLE = [  # (name, MB, retention, on the front?)
    ("gguf q4_0", 90, 0.80, True),
    ("gguf q4_k_m", 100, 0.90, True),
    ("onnx int4", 110, 0.89, False),  # larger than q4_k_m and worse
    ("gguf q6_k", 120, 0.95, True),
    ("openvino int4", 130, 0.93, False),  # larger than q6_k and worse
    ("gguf q8_0", 150, 0.99, True),
    ("openvino int8", 150, 0.98, False),  # as large as q8_0 and worse
    ("onnx fp32", 200, 0.99, False),  # as good as q8_0 and larger
]


def test_pareto_front_is_exactly_the_undominated():
    pts = [(mb, q) for _, mb, q, _ in FRONT_TABLE]
    assert pareto_front(pts) == [i for i, row in enumerate(FRONT_TABLE) if row[3]]
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [0, 1]  # equal points dominate neither


def test_pareto_front_drawn_as_steps_through_its_points():
    rows = [make_row(*name.split(), mb, q, chosen=name == "gguf q6_k") for name, mb, q, _ in
            FRONT_TABLE]  # fmt: skip
    failed = make_row("gguf", "q3_k", 80, 0.995, accepted=False, reasons=["runtime crashed"])
    failed["status"] = "error"  # smaller and better, but failed: not on the front
    chart = svgs(page_of([*rows, failed]))[0]
    pts = points(chart)
    front = {n for n, c in pts.items() if "front" in classes(c)}
    assert front == {name for name, _, _, on in FRONT_TABLE if on}
    assert "error" in classes(pts["gguf q3_k"])
    (poly,) = [el for el in chart.iter(f"{S}polyline") if "front" in classes(el)]
    vertices = [tuple(map(float, p.split(","))) for p in poly.get("points").split()]
    centres = {n: (float(c.get("cx")), float(c.get("cy"))) for n, c in pts.items()}
    assert {centres[n] for n in front} <= set(vertices)
    assert not {centres[n] for n in pts if n not in front} & set(vertices)
    for (x1, y1), (x2, y2) in itertools.pairwise(vertices):
        assert x1 == x2 or y1 == y2  # a step: each segment horizontal or vertical
        assert x2 >= x1 and y2 <= y1  # larger bundles, more quality (SVG y grows downwards)


def test_chosen_is_filled_larger_and_in_the_legend():
    rows = [
        make_row("gguf", "q8_0", 145, 0.99, chosen=True),
        make_row("gguf", "q4_k_m", 105, 0.95),
        make_row("onnx", "int4", 120, 0.83, accepted=False, reasons=["retention 0.83 < 0.9"]),
    ]
    root = page_of(rows)
    chart = svgs(root)[0]
    pts = points(chart)
    assert classes(pts["gguf q8_0"]) >= {"point", "chosen"}
    assert classes(pts["onnx int4"]) >= {"point", "rejected"}
    assert classes(pts["gguf q4_k_m"]) >= {"point", "accepted"}
    assert float(pts["gguf q8_0"].get("r")) > max(
        float(pts[n].get("r")) for n in ("gguf q4_k_m", "onnx int4")
    )
    style = root.find("head/style").text
    assert ".point.chosen { fill: #1b7a1b" in style and ".point.rejected { fill: #fff" in style
    legend = [el for el in chart.iter(f"{S}text") if "legend" in classes(el)]
    assert "chosen bundle" in [el.text for el in legend]
    assert any("rejected" in el.text for el in legend)
    (chosen_row,) = [tr for tr in root.iter("tr") if "chosen" in classes(tr)]
    assert chosen_row.find("td").text == "gguf q8_0"


CROWD = ["q4_0", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "q4_k_m_mixed", "q3_k_s"]


def test_labels_never_overlap_when_crowded():
    """Eight candidates within 1.4 MB and 0.7 points of each other, pushed to the chart's
    right edge by a small outlier: long labels cannot go right, and all compete for room."""
    rows = [
        make_row("gguf", p, 100 + 0.2 * i, 0.930 + 0.001 * i, chosen=i == 3, interval=0.004)
        for i, p in enumerate(CROWD)
    ]
    rows[-1]["precision"] = "q4_k_m_mixed_long_name"
    rows.append(make_row("onnx", "int4", 60, 0.88, accepted=False, reasons=["below the floor"]))
    chart = svgs(page_of(rows, dict(BUDGET, min_quality=0.93)))[0]
    boxes = label_boxes(chart)
    names = {text for text, _ in boxes}
    assert names >= {f"gguf {p}" for p in CROWD[:-1]} | {"gguf q4_k_m_mixed_long_name"}
    assert {"floor 0.93", "onnx int4"} <= names
    width, height = float(chart.get("width")), float(chart.get("height"))
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.intersects(box_b), (a, b)
    for text, box in boxes:
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, text
    ends = [el for el in chart.iter(f"{S}text") if el.text == "gguf q4_k_m_mixed_long_name"]
    assert ends[0].get("text-anchor") == "end"  # no room on the right: it went left


def test_place_labels_keeps_apart_and_inside():
    bounds = Box(0, 0, 300, 200)
    anchors = [(150 + (i % 3), 100 + (i % 2), 5, f"candidate {i}") for i in range(12)]
    anchors.append((290, 50, 5, "at the right edge"))
    labels = place_labels(anchors, bounds)
    assert all(label is not None for label in labels)
    for a, b in itertools.combinations(labels, 2):
        assert not a.box.intersects(b.box)
    assert all(label.box.inside(bounds) for label in labels)
    assert labels[-1].anchor == "end" and labels[-1].box.x1 < 290
    assert labels[0].anchor == "start" and abs(labels[0].y - (100 + 3.5)) < 0.01  # beside it
    assert place_labels(anchors, bounds) == labels  # deterministic
    assert place_labels([(10, 10, 5, "x" * 80)], bounds) == [None]  # no room anywhere


def _bars(svg, cls):
    """The bars (each with its figure as a title), not the legend's swatches."""
    return [
        el
        for el in svg.findall(f"{S}rect")  # the legend's swatches sit in groups
        if classes(el) >= {"bar", cls}
    ]


def test_budgets_drawn_when_given_and_skipped_without():
    rows = [
        make_row("gguf", "q8_0", 145, 0.99, chosen=True, rss_mb=1500, decode=40),
        make_row("gguf", "q4_k_m", 105, 0.95, rss_mb=900, decode=60),
    ]
    quality, memory, decode, first = svgs(page_of(rows))
    assert "budget ≤ 3 GB" in texts(memory)
    assert "budget ≥ 5 tokens/s" in texts(decode)
    assert "budget ≤ 8000 ms" in texts(first)
    (line,) = [el for el in memory.findall(f"{S}line") if "budget" in classes(el)]
    bar = _bars(memory, "host")[0]  # 1.5 GB: the budget line is twice as far from the axis
    x0, w = float(bar.get("x")), float(bar.get("width"))
    assert abs(float(line.get("x1")) - (x0 + 2 * w)) < 0.2
    assert [el for el in quality.findall(f"{S}line") if "floor" in classes(el)]

    bare = page_of(rows, budget=None)
    charts = svgs(bare)
    assert len(charts) == 4  # measured figures are still drawn
    for svg in charts:
        assert not [el for el in svg.iter() if classes(el) & {"budget", "floor"}]
        assert not [s for s in texts(svg) if "budget ≤" in s or "budget ≥" in s or "floor" in s]
    assert "No budget was recorded" in "".join(bare.itertext())


def test_one_device_prediction_with_its_interval_beside_the_host():
    rows = [
        make_row(
            "gguf", "q8_0", 145, 0.99, chosen=True, decode=80, first_token=600,
            device=(20, 900, (15, 26), (700, 1200)),
        ),
        make_row("gguf", "q4_k_m", 105, 0.95, decode=100, first_token=500,
                 device=(30, 700, (24, 38), (550, 950))),
    ]  # fmt: skip
    budget = {"decode_tokens_per_s": 25, "first_token_ms": 1000}
    root = page_of(rows, budget=budget)
    _, memory, decode, first = svgs(root)
    device_label = "predicted for the device (80 % interval)"
    for svg, host_values, device_values in ((decode, (80, 100), (20, 30)),
                                            (first, (600, 500), (900, 700))):  # fmt: skip
        host, device = _bars(svg, "host"), _bars(svg, "device")
        assert len(host) == len(device) == 2
        legend = [el.text for el in svg.iter(f"{S}text") if "legend" in classes(el)]
        assert legend == ["this host (measured)", device_label]
        for bar, value in zip(device, device_values, strict=True):
            assert device_label in bar.find(f"{S}title").text
            assert f"{value:,}" in bar.find(f"{S}title").text
        for bar, value in zip(host, host_values, strict=True):
            assert "this host (measured)" in bar.find(f"{S}title").text
            assert f"{value:,}" in bar.find(f"{S}title").text
        for d, h, dv, hv in zip(device, host, device_values, host_values, strict=True):
            ratio = float(d.get("width")) / float(h.get("width"))
            assert abs(ratio / (dv / hv) - 1) < 0.02  # bars to scale
        # each device bar carries its interval: a whisker and its figures
        whiskers = [el for el in svg.iter(f"{S}line") if "interval" in classes(el)]
        assert len(whiskers) == 3 * 2
    assert "15–26" in texts(decode) or any("15–26" in x for x in texts(decode))
    assert not _bars(memory, "device")  # memory carries over: measured once
    page = "".join(root.itertext())
    assert "the fitted model, refined by this host" in page
    headers = [th.text for th in root.iter("th")]
    assert headers.count("device (80 % interval)") == 2 and headers.count("this host") == 3
    assert "planned" not in headers[-4:]  # one prediction of speed, not two
    cells = [td.text for td in root.iter("td")]
    assert "20.0 (15.0–26.0)" in cells and "900 (700–1,200)" in cells
    # the q8_0's decode interval 15-26 straddles the floor 25, its first token 700-1200 the
    # ceiling 1000; the q4_k_m's decode 24-38 straddles 25 too
    reasons = [td.text for td in root.iter("td") if "reasons" in classes(td)]
    assert len([r for r in reasons if "marginal: decode" in r]) == 2
    assert len([r for r in reasons if "marginal: first token" in r]) == 1

    plain = page_of([make_row("gguf", "q8_0", 145, 0.99, chosen=True)])
    _, _, plain_decode, _ = svgs(plain)  # without a build's refinement: the plan's prediction
    assert _bars(plain_decode, "device")
    assert "nothing measured here refined it" in "".join(plain.itertext())


def test_rows_missing_optional_keys_still_render(tmp_path):
    minimal = {  # only what every build has had: no status, device, interval, chosen flags
        "format": "onnx",
        "precision": "int8",
        "predicted": {"memory_bytes": 5e8, "disk_bytes": 2e8, "decode_tokens_per_s": 10.0,
                      "first_token_ms": 300.0, "quality": 0.95},  # fmt: skip
        "measured": {"retention": 0.97, "perplexity": 13.0, "disk_bytes": 2.1e8,
                     "peak_rss_bytes": None, "decode_tokens_per_s": None, "first_token_ms": None},
    }  # fmt: skip
    failed = {
        "format": "gguf",
        "precision": "q4_0",
        "status": "error",
        "reasons": ["the runtime could not load the model"],
        "predicted": {},
        "measured": {},
    }
    results = [
        result("bare", [minimal, failed]),  # no .budget attribute at all
        SimpleNamespace(target="empty", candidates_measured=[], budget=None),
    ]
    path = write_report(tmp_path, "m", results)
    root = ET.fromstring(path.read_text(encoding="utf-8"))
    charts = svgs(root)
    assert len(charts) == 3  # quality, and the device's predicted speeds: nothing measured
    assert set(points(charts[0])) == {"onnx int8"}
    rows = [tr for tr in root.iter("tr") if tr.find("td") is not None and "why" not in classes(tr)]
    verdicts = {tr.findall("td")[0].text: tr.findall("td")[1].text for tr in rows}
    assert verdicts == {"onnx int8": "accepted", "gguf q4_0": "error"}
    page = "".join(root.itertext())
    assert "the runtime could not load the model" in page
    assert "No candidate was measured for this target." in page


def test_hostile_names_are_escaped():
    evil = '"><script>&x'
    rows = [make_row("gguf", evil, 120, 0.96, chosen=True, reasons=["<b>bold</b> & more"])]
    text = render("<model>", [result("<i>t</i>", rows, BUDGET)])
    assert "<script" not in text and "<b>" not in text and "<i>" not in text
    root = ET.fromstring(text)
    chart = svgs(root)[0]
    assert f"gguf {evil}" in [t for t, _ in label_boxes(chart)]
    cells = ["".join(td.itertext()) for td in root.iter("td")]
    assert f"gguf {evil}" in cells and "<b>bold</b> & more" in cells
    assert root.find("head/title").text == "edgepack: <model>"
    assert "Target <i>t</i>" in [h.text for h in root.iter("h2")]


def test_budget_given_as_a_dataclass():
    from dataclasses import make_dataclass

    Budget = make_dataclass("Budget", [(k, float) for k in BUDGET], frozen=True)
    rows = [make_row("gguf", "q8_0", 145, 0.99, chosen=True)]
    page = render("m", [result("edge-4gb", rows, Budget(**BUDGET))])
    root = ET.fromstring(page)
    assert "floor 0.9" in texts(svgs(root)[0])
    assert "budget ≤ 3 GB" in texts(svgs(root)[1])


def test_the_chosen_bundles_cost_is_shown_as_the_build_recorded_it():
    row = make_row("gguf", "q8_0", 145, 0.99, chosen=True)
    row["cost"] = {"single_stream_usd_per_million": 0.57, "served_usd_per_million": 0.014,
                   "streams": 64, "hourly_usd": 0.752, "instance": "AWS g4dn.2xlarge",
                   "source": "aws.amazon.com"}  # fmt: skip
    page = "".join(page_of([row]).itertext())
    assert "$0.57 per million generated tokens with one stream" in page
    assert "$0.014 at the 64 streams the runtime sustains" in page and "AWS g4dn.2xlarge" in page
    assert "per million" not in "".join(page_of([make_row("gguf", "q8_0", 145, 0.99)]).itertext())
