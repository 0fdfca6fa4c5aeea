"""`edgepack prune`: the click command (added to the CLI group by main.py)."""

from __future__ import annotations

import click

from ..liblog import libraries_to_log, terminal
from .options import emit, json_option


@click.command("prune")
@click.option("--model", metavar="PATH", help="Model to prune (default: the embedded model).")
@click.option("--out", required=True, type=click.Path(), help="New or empty directory.")
@click.option(
    "--ratio",
    type=float,
    default=0.25,
    show_default=True,
    help="Share of every layer's MLP channels to remove (the least important).",
)
@click.option(
    "--kv-groups",
    type=int,
    help="Key/value groups (with their query heads) every layer keeps (default: all).",
)
@click.option(
    "--hidden-ratio",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of the hidden size (embedding channels) to remove; Llama, Mistral, Qwen.",
)
@click.option(
    "--calibration",
    type=click.Path(),
    help="Text whose activations rank channels and heads (default: the built-in text).",
)
@json_option
def prune_command(model, out, ratio, kv_groups, hidden_ratio, calibration, as_json):
    """Width-prune a model: MLP channels and attention groups by activation importance."""
    from pathlib import Path

    from ..compress.prune import check_options, prune
    from ..measure.calibration_text import calibration_text

    # bad input answers before any model is loaded
    check_options(ratio, kv_groups, hidden_ratio)
    if calibration:
        calibration_text(calibration)
    if model is None:
        from ..model.default import default_model_dir

        model = default_model_dir()
    elif not (Path(model) / "config.json").is_file():
        from ..errors import ModelError

        raise ModelError(f"--model {model} is not a model directory (no config.json)")
    note = lambda message: print(f"prune: {message}", file=terminal())  # noqa: E731
    with libraries_to_log("prune"):
        report = prune(
            Path(model),
            Path(out),
            ratio,
            kv_groups,
            Path(calibration) if calibration else None,
            progress=note,
            hidden_ratio=hidden_ratio,
        )
    p = report["parameters"]
    click.echo(
        f"pruned {report['source']['path']} -> {out}: MLP channels "
        f"{report['intermediate_size']['before']} -> {report['intermediate_size']['after']}, "
        f"key/value groups {report['kv_groups']['before']} -> {report['kv_groups']['after']}"
        f", hidden size {report['hidden_size']['before']} -> {report['hidden_size']['after']}"
        f"; parameters {p['before']:,} -> {p['after']:,} ({p['kept']:.1%}); heal it with "
        f"`{report['heal']}`",
        err=True,
    )
    if as_json:
        emit(report)
