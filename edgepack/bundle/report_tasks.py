"""report.html's task-accuracy table (`build --eval-tasks`): per category, the fp32
reference's accuracy and each measured candidate's, in its own runtime, with its retention."""

from __future__ import annotations

from html import escape


def task_table(rows: list[dict], names: list[str]) -> str:
    """The table for one target's measured candidates; "" where none answered tasks."""
    measured = [
        (n, (r.get("measured") or {}).get("tasks"))
        for r, n in zip(rows, names, strict=True)
        if (r.get("measured") or {}).get("tasks")
    ]
    if not measured:
        return ""
    first = measured[0][1]
    lines = [("all", first)] + [(c["category"], c) for c in first["categories"]]
    head = "".join(f"<th>{escape(n)}</th>" for n, _ in measured)
    body = []
    for label, ref in lines:
        cells = []
        for _, tasks in measured:
            row = tasks if label == "all" else _category(tasks, label)
            cells.append(_cell(row))
        body.append(
            f'<tr><td class="name">{escape(label)}</td><td>{ref["items"]}</td>'
            f"<td>{ref['reference_accuracy']:.3f}</td>{''.join(cells)}</tr>"
        )
    judged = any(r.get("quality_metric") == "tasks" for r in rows)
    floor = "; this target's floor judges task accuracy retention" if judged else ""
    return (
        f"<h3>Task accuracy: {escape(first['task_set'])} ({first['items']} items)</h3>"
        '<table><thead><tr><th class="name">category</th><th>items</th><th>fp32 reference'
        f"</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        '<p class="muted">Accuracy in each candidate\'s own runtime (retention against the '
        "reference; agreement: the share of items answered as the reference answered them). "
        f"Multiple choice by the summed log-likelihood of each choice (lm-eval's acc){floor}.</p>"
    )


def _category(tasks: dict, name: str) -> dict | None:
    return next((c for c in tasks.get("categories", []) if c["category"] == name), None)


def _cell(row: dict | None) -> str:
    if row is None:
        return "<td>-</td>"
    retention = row.get("retention")
    kept = "-" if retention is None else f"{retention:.2f}"
    return (
        f"<td>{row['accuracy']:.3f} <span class=\"muted\">(retention {kept}, agreement "
        f"{row['agreement']:.2f})</span></td>"
    )
