"""`edgepack build`: plan, export, validate and write a self-contained bundle per target."""

from __future__ import annotations

import click

from ..liblog import libraries_to_log
from .options import emit, json_option, model_facts, model_options


@click.command()
@model_options
@click.option(
    "--target",
    "targets",
    required=True,
    multiple=True,
    metavar="NAME|FILE",
    help="Built-in profile or profile file; repeat for several bundles.",
)
@click.option("--format", "format_name", help="Override the plan: gguf, openvino or onnx.")
@click.option("--precision", help="Override the plan: fp16, int8, int4 or a format's own name.")
@click.option(
    "--bits-per-weight",
    type=float,
    metavar="B",
    help="A size target: the model file at B bits per weight (gguf: 4.6-8.5), each tensor's "
    "type chosen by its measured error on the calibration text. Sets --precision bpwB.",
)
@click.option("--out", default="bundles", show_default=True, type=click.Path(), help="Where.")
@click.option("--no-check", is_flag=True, help="Skip running the bundle's check on this host.")
@click.option(
    "--no-resolve",
    is_flag=True,
    help="Do not resolve the requirements for the target's platform (needs the package "
    "index); requirements.txt then pins this host's versions.",
)
@click.option(
    "--wheels",
    is_flag=True,
    help="Put the target's wheels into the bundle (wheelhouse/), for a device without the "
    "internet; requirements.txt then carries their hashes.",
)
@click.option(
    "--candidates",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Export and measure the plan's best K candidates; keep the best measured one.",
)
@click.option(
    "--eval-data",
    type=click.Path(exists=True, dir_okay=False),
    help="Evaluation text for measured quality (default: the built-in one).",
)
@click.option(
    "--eval-tokens",
    type=click.IntRange(min=256),
    help="Scored tokens of that text (default: 4096); fewer are quicker, with a wider interval, "
    "and the gate judges the interval's lower bound.",
)
@click.option(
    "--eval-tasks",
    metavar="FILE.jsonl|builtin",
    help="Also measure task accuracy in each candidate's runtime against the fp32 reference: "
    "multiple-choice and generation rows, per category (`builtin`: edgepack's 100 items). A "
    'target whose budget.quality_metric is "tasks" puts its floor on it.',
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, dir_okay=False),
    help="Calibration text for data-aware quantization (default: the built-in one where a "
    "precision needs one).",
)
@click.option(
    "--allow-distill",
    is_flag=True,
    help="Make the student a target's plan needs: distil a depth student, or prune a width "
    "student and heal it (takes a while; cached for later builds).",
)
@click.option(
    "--distill-steps",
    type=click.IntRange(min=1),
    help="Training steps of that distillation (default: edgepack distill's).",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(dir_okay=False),
    metavar="KEY",
    help="Sign each bundle with this private key (`edgepack keygen`): model.sig covers every "
    "file; check.py --public-key PUB refuses anything else.",
)
@json_option
def build(
    model,
    allow_pickle,
    trust_remote_code,
    targets,
    format_name,
    precision,
    bits_per_weight,
    out,
    no_check,
    no_resolve,
    wheels,
    candidates,
    eval_data,
    eval_tokens,
    eval_tasks,
    calibration,
    allow_distill,
    distill_steps,
    sign_key,
    as_json,
):
    """Plan, export, validate and write a self-contained bundle per target."""
    from pathlib import Path

    from ..build.pipeline import build as run_build
    from ..device.profiles import load_profile
    from .tables import build_text

    if bits_per_weight is not None:  # the build refuses a target its format cannot reach
        if precision:
            raise click.UsageError("give --precision or --bits-per-weight, not both")
        from ..export.registry import target_name

        precision = target_name(bits_per_weight)
    if wheels and no_resolve:
        raise click.UsageError("--wheels needs the resolution that --no-resolve skips")
    if sign_key:
        from ..bundle.signing import check_private_key

        check_private_key(Path(sign_key))
    profiles = [load_profile(t) for t in targets]
    # the user's texts before the model: a bad one is refused before anything is loaded
    if calibration:
        from ..measure.calibration_text import calibration_text

        calibration_text(calibration)
    if eval_data:
        from ..measure.eval_text import eval_text

        eval_text(Path(eval_data))
    if eval_tasks:
        from ..measure.tasks import load_tasks

        load_tasks(eval_tasks)
    facts = model_facts(model, allow_pickle, trust_remote_code)
    unsupported = dict(facts.unsupported)
    if format_name in unsupported:
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"--format {format_name} does not support this model: {unsupported[format_name]}; "
            f"formats that do: {', '.join(facts.formats) or 'none'}"
        )
    with libraries_to_log("build"):  # their output goes to a log; stdout is for the result
        results = run_build(
            Path(facts.path),
            facts,
            profiles,
            Path(out),
            format_name,
            precision,
            trust_remote_code=trust_remote_code,
            run_check=not no_check,
            resolve_requirements=not no_resolve,
            wheels=wheels,
            sign_key=Path(sign_key) if sign_key else None,
            eval_data=Path(eval_data) if eval_data else None,
            eval_tasks=eval_tasks,
            **({"eval_tokens": eval_tokens} if eval_tokens else {}),
            candidates=candidates,
            calibration=Path(calibration) if calibration else None,
            allow_distill=allow_distill,
            distill_steps=distill_steps,
        )
    if as_json:
        emit({"bundles": [r.__dict__ for r in results]})
    else:
        click.echo(build_text(results))
