"""`edgepack distill`: the click command (added to the CLI group by main.py)."""

from __future__ import annotations

import click

from ..liblog import libraries_to_log
from .options import emit, json_option


@click.command("distill")
@click.option("--teacher", metavar="PATH", help="Teacher model (default: the embedded model).")
@click.option("--out", required=True, type=click.Path(), help="New or empty student directory.")
@click.option("--layers", type=int, help="Student layers (default: half the teacher's).")
@click.option(
    "--ratio", type=float, help="Student layers as a share of the teacher's, e.g. 0.5."
)
@click.option(
    "--student",
    metavar="PATH",
    help="Train this model as the student instead of a layer subset (e.g. `edgepack prune`'s).",
)
@click.option(
    "--data",
    multiple=True,
    type=click.Path(),
    help="Training text file; repeat for several (default: the built-in training text).",
)
@click.option("--steps", type=int, help="Optimizer steps (default: 200).")
@click.option("--seq-len", type=int, help="Tokens per training window (default: 256).")
@click.option("--batch", type=int, help="Windows per step (default: 4).")
@click.option(
    "--temperature", type=float, help="Softmax temperature of the KL term (default: 2)."
)
@click.option("--alpha", type=float, help="Weight of KL against cross-entropy (default: 0.5).")
@click.option("--lr", type=float, help="Peak learning rate, AdamW (default: 3e-4).")
@click.option(
    "--save-steps",
    type=int,
    help="Checkpoint and held-out evaluation every N steps (default: an eighth of --steps).",
)
@click.option(
    "--generate",
    type=int,
    default=0,
    help="Add N tokens of text sampled from the teacher to the training text (default: 0).",
)
@click.option(
    "--eval-data",
    type=click.Path(),
    help="Text to judge the student on at the end (default: the built-in evaluation text).",
)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@json_option
def distill_command(
    teacher, out, layers, ratio, student, data, resume, eval_data, as_json, **numbers
):
    """Distil a smaller student (a subset of the teacher's layers, or --student) to match it."""
    from pathlib import Path

    from ..compress.distill import distill, report_text

    if teacher is None:
        from ..model.default import default_model_dir

        teacher = default_model_dir()
    options = {k: v for k, v in numbers.items() if v is not None}
    with libraries_to_log("distill"):  # their output goes to a log; stdout is for the result
        report = distill(
            Path(teacher),
            Path(out),
            layers,
            ratio=ratio,
            data=[Path(d) for d in data],
            resume=resume,
            eval_data=Path(eval_data) if eval_data else None,
            student=Path(student) if student else None,
            **options,
        )
    if not report:  # a secondary process under `accelerate launch`
        return
    click.echo(report_text(report), err=True)
    if as_json:
        emit(report)
