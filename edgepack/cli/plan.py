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
@json_option
def plan(model, allow_pickle, trust_remote_code, target, calibrated, as_json):
    """Choose student x format x precision for a target, with the arithmetic shown."""
    from ..device.profiles import load_profile
    from ..plan.planner import plan as make_plan
    from .tables import plan_text

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
    result = make_plan(facts, profile, calibration)
    if as_json:
        emit(result.to_dict())
    else:
        click.echo(plan_text(result))
    if result.chosen is None:
        raise PlanError(result.needs["message"], plan=result)
