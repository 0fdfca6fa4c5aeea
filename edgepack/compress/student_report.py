"""The report `edgepack distill` leaves in a student's directory (distill_report.json): reading
it (is this directory a student, of which teacher, how many layers), printing it, and the
command line that makes a student. Light: no torch, no transformers."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

REPORT_FILE = "distill_report.json"
PRUNE_REPORT = "prune_report.json"  # edgepack.compress.prune's REPORT_FILE


def command_line(teacher_dir: Path, layers: int, out: Path, student: Path | None = None) -> str:
    """The `edgepack distill` command that makes a student of `layers` layers into out (or
    trains the given student)."""
    teacher = [] if _is_default(teacher_dir) else ["--teacher", str(teacher_dir)]
    which = ["--student", str(student)] if student else ["--layers", str(layers)]
    return shlex.join(["edgepack", "distill", *teacher, *which, "--out", str(out)])


def prune_command_lines(model_dir: Path, ratio: float, pruned: Path, out: Path) -> str:
    """The two commands that make a width student: prune model_dir, heal it from model_dir."""
    model = [] if _is_default(model_dir) else ["--model", str(model_dir)]
    prune = shlex.join(["edgepack", "prune", *model, "--ratio", f"{ratio:g}", "--out", str(pruned)])
    return f"{prune} && {command_line(model_dir, 0, out, student=pruned)}"


def _is_default(model_dir: Path) -> bool:
    """Whether model_dir is the embedded default model (commands then leave it out)."""
    from ..cache import cache_root
    from ..model.default import MODEL_NAME

    model_dir = Path(model_dir)
    return model_dir.name.startswith(MODEL_NAME) and (
        model_dir.resolve().parent == (cache_root() / "models").resolve()
    )


def read_report(model_dir: Path) -> dict | None:
    """The distill_report.json of a distilled student, or None for any other directory."""
    try:
        report = json.loads((Path(model_dir) / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def student_layers_from(model_dir: Path) -> int | None:
    """The layer count of a depth student made by `edgepack distill` (a subset of its teacher's
    layers), None if model_dir is not one."""
    student = (read_report(model_dir) or {}).get("student") or {}
    layers = student.get("num_layers")
    return layers if isinstance(layers, int) and not student.get("given") else None


def pruned_from(model_dir: Path) -> dict | None:
    """What `edgepack prune` removed to make model_dir (from its prune_report.json), or None."""
    try:
        report = json.loads((Path(model_dir) / PRUNE_REPORT).read_text(encoding="utf-8"))
        return {
            "ratio": report["ratio"],
            "intermediate_size": report["intermediate_size"],
            "kv_groups": report["kv_groups"],
            "hidden_size": report.get("hidden_size"),  # absent before --hidden-ratio
            "parameters": report["parameters"],
            "calibration": report["calibration"],
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def student_text(model_dir: Path) -> str | None:
    """What kind of student model_dir is, in words, or None if it is not one."""
    student = (read_report(model_dir) or {}).get("student")
    if not isinstance(student, dict):
        return None
    cut = _pruned_parts(student.get("pruned") or {})
    if cut:
        return f"student with {cut} pruned"
    if student.get("given"):
        return "healed student"
    layers = student.get("num_layers")
    return f"{layers}-layer student" if isinstance(layers, int) else "student"


def teacher_of(model_dir: Path) -> Path | None:
    """The teacher a student was distilled from, if the report names one that still exists."""
    path = ((read_report(model_dir) or {}).get("teacher") or {}).get("path")
    return Path(path) if isinstance(path, str) and Path(path).is_dir() else None


def report_text(report: dict) -> str:
    """The short table printed after a distillation."""
    e, s, t = report["evaluation"], report["student"], report["teacher"]
    lines = [
        f"{s['num_layers']}-layer student of a {t['num_layers']}-layer teacher, "
        f"{report['training']['global_step']} steps, {report['wall_s']:.0f} s",
        f"on {e['text']} evaluation text ({e['teacher']['tokens']} scored tokens, not trained on):",
        f"{'model':<12} {'layers':>6} {'perplexity':>12} {'KL to teacher':>14} {'top-1':>7}",
    ]
    for name, n in (
        ("teacher", t["num_layers"]),
        ("undistilled", s["num_layers"]),
        ("distilled", s["num_layers"]),
    ):
        f = e[name]
        lines.append(
            f"{name:<12} {n:>6} {f['perplexity']:>12.4g} {f['kl']:>14.4f} {f['top1']:>7.1%}"
        )
    h = report["held_out"]
    lines.append(
        f"held-out training text ({h['teacher']['tokens']} tokens): KL "
        f"{h['undistilled']['kl']:.4f} -> {h['distilled']['kl']:.4f}, top-1 "
        f"{h['undistilled']['top1']:.1%} -> {h['distilled']['top1']:.1%}"
    )
    return "\n".join(lines)


def _pruned_parts(pruned: dict) -> str:
    """What edgepack prune cut, in words: "25% of its MLP channels and 1 of 2 key/value
    groups" (empty if nothing, or no report)."""
    parts = []
    if isinstance(pruned.get("ratio"), (int, float)) and pruned["ratio"] > 0:
        parts.append(f"{pruned['ratio']:.0%} of its MLP channels")
    for key, what in (("kv_groups", "key/value groups"), ("hidden_size", "hidden channels")):
        sizes = pruned.get(key) or {}
        before, after = sizes.get("before"), sizes.get("after")
        if isinstance(before, int) and isinstance(after, int) and after < before:
            parts.append(f"{before - after} of {before} {what}")
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
