"""The command line: parse, call, print (text, or one JSON document with --json).

This is the only place that turns an EdgepackError into a one-line message and an exit code.
Heavy backends are imported by the commands that need them, never at start-up.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_USAGE, EdgepackError, PlanError, ProfileError
from ..liblog import libraries_to_log
from ..progress import end_bars
from .distill import register as register_distill
from .prune import register as register_prune

MODEL_HELP = "Hugging Face model directory (default: the embedded SmolLM2-135M-Instruct)."


def _model_options(fn):
    fn = click.option("--model", "model", metavar="PATH", help=MODEL_HELP)(fn)
    fn = click.option(
        "--allow-pickle",
        is_flag=True,
        help="Read .bin/.pt checkpoints (torch.load with weights_only=True) when no safetensors.",
    )(fn)
    fn = click.option(
        "--trust-remote-code",
        is_flag=True,
        help="Allow a model that needs its own Python code (config.json auto_map).",
    )(fn)
    return fn


def _json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(fn)


def _facts(model, allow_pickle, trust_remote_code):
    from ..export.support import inspect_model

    if model is None:
        from ..model.default import default_model_dir

        model = default_model_dir()
    return inspect_model(model, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)


def _emit(data) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepack")
def cli():
    """Plan, export and bundle a Hugging Face model for a device profile."""


@cli.command()
@click.option("--detect", is_flag=True, help="Write a profile of this machine (probes it briefly).")
@click.option(
    "--out",
    type=click.Path(),
    help="Where --detect writes the profile (default: ./detected.toml; .json writes JSON).",
)
@click.option("--name", help="The detected profile's name (default: detected).")
@click.option("--force", is_flag=True, help="Let --detect replace an existing --out file.")
@_json_option
def targets(detect, out, name, force, as_json):
    """List the built-in device profiles, or with --detect write one of this machine."""
    from ..device.profiles import builtin_profiles
    from .tables import targets_table

    if detect:
        _detect_target(out or "detected.toml", name or "detected", force, as_json)
        return
    if out or name or force:
        raise ProfileError("--out, --name and --force go with --detect: edgepack targets --detect")
    profiles = builtin_profiles()
    if as_json:
        _emit([p.to_dict() for p in profiles])
    else:
        click.echo(targets_table(profiles))


def _detect_target(out: str, name: str, force: bool, as_json: bool) -> None:
    from dataclasses import asdict
    from pathlib import Path

    from ..device.detect import build_profile, check_writable, detect, write_profile
    from .tables import targets_table

    path = Path(out)
    check_writable(path, force)  # before the probe, so a refusal is immediate
    machine = detect(path.parent, progress=lambda msg: click.echo(f"detect: {msg}", err=True))
    profile, text = build_profile(machine, name)
    if path.suffix == ".json":
        text = json.dumps(profile.to_dict(), indent=2) + "\n"
    write_profile(path, text, force)
    if as_json:
        _emit({"file": str(path), "profile": profile.to_dict(), "measured": asdict(machine)})
    else:
        click.echo(targets_table([profile]))
        click.echo(f"\nwrote {path}; plan for this machine: edgepack plan --target {path}")


@cli.command()
@_model_options
@_json_option
def inspect(model, allow_pickle, trust_remote_code, as_json):
    """Model facts from config.json and safetensors headers, without loading weights."""
    from .tables import facts_text

    facts = _facts(model, allow_pickle, trust_remote_code)
    if as_json:
        _emit(facts.to_dict())
    else:
        click.echo(facts_text(facts))


@cli.command()
@_model_options
@click.option("--target", required=True, metavar="NAME|FILE", help="Built-in profile or file.")
@click.option(
    "--calibrated",
    is_flag=True,
    help="Use the runtime efficiencies this host measured in earlier builds instead of the "
    "priors (see `edgepack build`).",
)
@_json_option
def plan(model, allow_pickle, trust_remote_code, target, calibrated, as_json):
    """Choose student x format x precision for a target, with the arithmetic shown."""
    from ..device.profiles import load_profile
    from ..plan.planner import plan as make_plan
    from .tables import plan_text

    profile = load_profile(target)
    facts = _facts(model, allow_pickle, trust_remote_code)
    calibration = None
    if calibrated:
        from ..cache import cache_root
        from ..plan.speed_calibration import host_machine, stored

        calibration = stored(cache_root(), host_machine())
        if not calibration:
            raise EdgepackError(
                "no calibration for this host yet: build a bundle here first "
                "(`edgepack build` measures each candidate), then plan with --calibrated"
            )
    result = make_plan(facts, profile, calibration)
    if as_json:
        _emit(result.to_dict())
    else:
        click.echo(plan_text(result))
    if result.chosen is None:
        raise PlanError(result.needs["message"], plan=result)


@cli.command()
@_model_options
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
@_json_option
def build(
    model,
    allow_pickle,
    trust_remote_code,
    targets,
    format_name,
    precision,
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
    as_json,
):
    """Plan, export, validate and write a self-contained bundle per target."""
    from pathlib import Path

    from ..build.pipeline import build as run_build
    from ..device.profiles import load_profile
    from .tables import build_text

    if wheels and no_resolve:
        raise click.UsageError("--wheels needs the resolution that --no-resolve skips")
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
    facts = _facts(model, allow_pickle, trust_remote_code)
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
            eval_data=Path(eval_data) if eval_data else None,
            eval_tasks=eval_tasks,
            **({"eval_tokens": eval_tokens} if eval_tokens else {}),
            candidates=candidates,
            calibration=Path(calibration) if calibration else None,
            allow_distill=allow_distill,
            distill_steps=distill_steps,
        )
    if as_json:
        _emit({"bundles": [r.__dict__ for r in results]})
    else:
        click.echo(build_text(results))


@cli.command()
@click.argument("bundle", type=click.Path())
@click.option("--target", metavar="NAME|FILE", help="Check against this profile's budgets.")
@click.option("--keep", is_flag=True, help="Keep the directory a tarball was unpacked into.")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads for the check.")
@click.option("--repetitions", type=click.IntRange(min=1), help="Timed runs (check default: 5).")
@click.option(
    "--allow-cpu",
    is_flag=True,
    help="A bundle planned for a GPU may run on this host's CPU (a smoke test off the device).",
)
@_json_option
def verify(bundle, target, keep, threads, repetitions, allow_cpu, as_json):
    """Check a bundle (directory or .tar.gz): integrity, golden outputs, budgets."""
    from pathlib import Path

    from ..bundle.verify import verify as run_verify
    from ..device.profiles import load_profile
    from .tables import check_text

    profile = load_profile(target) if target else None
    check_args = []
    if threads:
        check_args += ["--threads", str(threads)]
    if repetitions:
        check_args += ["--repetitions", str(repetitions)]
    if allow_cpu:
        check_args.append("--allow-cpu")
    report = run_verify(Path(bundle), profile, keep=keep, check_args=check_args)
    if as_json:
        _emit(report)
    else:
        click.echo(check_text(report))
    code = report.get("exit_code", 2)
    if code:
        sys.exit(code)


register_distill(cli, _json_option, _emit)
register_prune(cli, _json_option, _emit)


def main(argv: list[str] | None = None) -> None:
    def internal(exc: BaseException) -> int:  # a bug, reported as one
        if os.environ.get("EDGEPACK_DEBUG"):
            traceback.print_exception(exc)
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} "
            "(set EDGEPACK_DEBUG=1 for the traceback and report it)",
            err=True,
        )
        return EXIT_INTERNAL

    try:
        try:
            code = cli.main(args=argv, prog_name="edgepack", standalone_mode=False)
        finally:
            end_bars()
    except click.exceptions.Abort as exc:
        # click turns an EOFError or KeyboardInterrupt raised inside a command into Abort, from
        # it; a prompt's own Abort has no cause. No command reads stdin: an EOFError is a bug.
        if isinstance(exc.__cause__, EOFError):
            code = internal(exc.__cause__)
        else:
            click.echo("interrupted" if exc.__cause__ else "aborted", err=True)
            code = 130
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE if exc.exit_code != 0 else 0
    except EdgepackError as exc:
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, reported as one
        code = internal(exc)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
