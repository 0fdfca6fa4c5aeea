"""report.html's and the terminal's task-accuracy tables, per category and candidate."""

import xml.etree.ElementTree as ET

from edgepack.bundle.report import render
from tests.bundle.rows import BUDGET, make_row, result


def tasks_of(accuracy, reference, by_category):
    categories = [
        {"category": name, "items": n, "accuracy": a, "reference_accuracy": r,
         "retention": min(1.0, a / r) if r else None, "agreement": 0.9}
        for name, (n, a, r) in by_category.items()
    ]  # fmt: skip
    return {
        "task_set": "built-in",
        "items": sum(n for n, _, _ in by_category.values()),
        "accuracy": accuracy,
        "reference_accuracy": reference,
        "retention": min(1.0, accuracy / reference),
        "retention_low": 0.8,
        "retention_high": 1.0,
        "agreement": 0.95,
        "categories": categories,
    }


def test_task_accuracy_table_per_category_and_candidate():
    from edgepack.cli.tables import task_lines

    a, b = make_row("gguf", "q8_0", 140, 0.99), make_row("gguf", "q4_0", 90, 0.9)
    a["measured"]["tasks"] = tasks_of(0.6, 0.6, {"factual": (30, 0.6, 0.6), "long": (10, 0.6, 0.0)})
    b["measured"]["tasks"] = tasks_of(0.5, 0.6, {"factual": (30, 0.5, 0.6), "long": (10, 0.5, 0.0)})
    b["quality_metric"] = "tasks"
    page = render("m", [result("edge-4gb", [a, b], BUDGET)])
    ET.fromstring(page)  # well-formed
    assert "Task accuracy: built-in (40 items)" in page and "floor judges task accuracy" in page
    table = page[page.index("Task accuracy: built-in") :]
    assert table.index("gguf q8_0") < table.index("gguf q4_0") < table.index("factual")
    assert "0.500 <span" in table and "retention 0.83" in table and "retention -" in table
    lines = task_lines([a, b])
    assert lines[0].startswith("tasks   gguf q8_0: accuracy 0.600, reference 0.600")
    assert "factual 0.50/0.60" in lines[3] and len(lines) == 4
    plain = render("m", [result("edge-4gb", [make_row("gguf", "q8_0", 1, 1)])])
    assert "Task accuracy" not in plain
