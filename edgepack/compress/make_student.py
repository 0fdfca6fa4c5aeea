"""The student a target's plan needs: where it is cached, making it (distilling a depth
student, or pruning a width student and healing it), and the message naming the commands that
make it when the build may not."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..device.profiles import Profile
from ..liblog import terminal
from ..model.default import model_name
from ..plan.planner import Candidate
from ..plan.students import Student


def student_dir(model_dir: Path, student: Student, cache: Path, steps: int) -> Path:
    """Where the cached student distilled (or pruned and healed) for `steps` steps lives."""
    from ..cache import content_key as model_key

    return (
        cache
        / "students"
        / f"{model_key(model_dir)}-s{steps}"
        / (f"{model_name(model_dir)}-{student.slug}")
    )


def distil_student(model_dir: Path, student: Student, cache: Path, steps: int | None) -> Path:
    """The student: from the cache, or made now (atomically: a killed distillation leaves
    nothing that looks finished). A depth student is distilled from model_dir; a width student
    is pruned from it, then healed by distillation from it."""
    import tempfile

    from .distill import DEFAULT_STEPS, REPORT_FILE, distill

    steps = steps or DEFAULT_STEPS
    dest = student_dir(model_dir, student, cache, steps)
    if (dest / REPORT_FILE).is_file():
        print(f"reusing the {student.describe()} in {dest}", file=terminal())
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".distilling-{student.slug}-", dir=dest.parent))
    try:
        if student.pruned_mlp is not None:
            from .prune import prune

            say = lambda m: print(f"prune: {m}", file=terminal())  # noqa: E731
            prune(model_dir, work / "pruned", student.pruned_mlp, progress=say)
            distill(model_dir, work / "student", steps=steps, student=work / "pruned")
        else:
            distill(model_dir, work / "student", student.layers, steps=steps)
        shutil.rmtree(dest, ignore_errors=True)
        (work / "student").rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def student_message(model_dir: Path, profile: Profile, c: Candidate) -> str:
    from .student_report import command_line, prune_command_lines

    student = c.student
    out = Path("students") / f"{model_name(model_dir)}-{student.slug}"
    if student.pruned_mlp is not None:
        pruned = Path("pruned") / f"{model_name(model_dir)}-{student.slug}"
        commands = prune_command_lines(model_dir, student.pruned_mlp, pruned, out)
        kind = f"{student.describe()}, healed by distillation"
    else:
        commands = command_line(model_dir, student.layers, out)
        kind = f"distilled {student.describe()}"
    return (
        f"{profile.name} needs a {kind} ({c.label}, quality prior "
        f"{c.predicted.quality:.3f}); make it with `{commands}` and build it with "
        f"--model {out}, or pass --allow-distill to distil it now (it takes a while), or "
        "relax the target's budgets (see `edgepack plan`)"
    )
