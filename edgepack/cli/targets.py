"""`edgepack targets`: the built-in device profiles, or with --detect a profile of this machine."""

from __future__ import annotations

import json

import click

from ..errors import ProfileError
from .options import emit, json_option


@click.command()
@click.option("--detect", is_flag=True, help="Write a profile of this machine (probes it briefly).")
@click.option(
    "--out",
    type=click.Path(),
    help="Where --detect writes the profile (default: ./detected.toml; .json writes JSON).",
)
@click.option("--name", help="The detected profile's name (default: detected).")
@click.option("--force", is_flag=True, help="Let --detect replace an existing --out file.")
@json_option
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
        emit([p.to_dict() for p in profiles])
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
        emit({"file": str(path), "profile": profile.to_dict(), "measured": asdict(machine)})
    else:
        click.echo(targets_table([profile]))
        click.echo(f"\nwrote {path}; plan for this machine: edgepack plan --target {path}")
