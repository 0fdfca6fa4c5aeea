"""`edgepack plan`: student x format x precision for a target, with the arithmetic shown."""

from __future__ import annotations

import click

from ..errors import EdgepackError, PlanError
from .options import emit, json_option, model_facts, model_options


@click.command()
@model_options
@click.option("--target", required=True, metavar="NAME|FILE", help="Built-in profile or file.")
@click.option(
    "--calibrated",
    is_flag=True,
    help="Refine speeds with the factors this host measured in earlier builds (each runtime "
    "against the fitted llama.cpp model; see `edgepack build`).",
)
@click.option(
    "--distill-tokens",
    type=click.IntRange(min=1),
    metavar="N",
    help="Tokens of distillation text a student will be trained on (default: edgepack "
    "distill's CPU heal, 40,960); beyond it, students' quality priors come from published "
    "distillation results.",
)
@click.option(
    "--distill-gpu",
    is_flag=True,
    help="The student will be distilled on GPUs (needed for budgets over 100 million tokens).",
)
@json_option
def plan(
    model, allow_pickle, trust_remote_code, target, calibrated, distill_tokens, distill_gpu,
    as_json,
):  # fmt: skip
    """Choose student x format x precision for a target, with the arithmetic shown."""
    from ..device.profiles import load_profile
    from ..plan.planner import plan as make_plan
    from .tables import plan_text

    declared = training(distill_tokens, distill_gpu)  # bad input answers before any work
    profile = load_profile(target)
    facts = model_facts(model, allow_pickle, trust_remote_code)
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
    result = make_plan(facts, profile, calibration, declared)
    if as_json:
        emit(result.to_dict())
    else:
        click.echo(plan_text(result))
    if result.chosen is None:
        raise PlanError(result.needs["message"], plan=result)


def training(tokens: int | None, gpu: bool):
    """The declared training of a student, or None for edgepack's CPU heal."""
    from ..plan.student_budget import CPU_TOKENS_LIMIT, Training

    if tokens is None:
        if gpu:
            raise EdgepackError("--distill-gpu needs --distill-tokens N: how much text")
        return None
    if tokens > CPU_TOKENS_LIMIT and not gpu:
        raise EdgepackError(
            f"--distill-tokens {tokens:,} is beyond a CPU's reach (edgepack distill heals on "
            f"{CPU_TOKENS_LIMIT:,} tokens at most without a GPU); add --distill-gpu if the "
            "student will be distilled on GPUs"
        )
    return Training(tokens, gpu)

