"""`edgepack verify`: check a bundle (directory or .tar.gz) against its budgets."""

from __future__ import annotations

import sys

import click

from .options import emit, json_option


@click.command()
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
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False),
    metavar="PUB",
    help="Refuse the bundle unless its signature (model.sig) verifies with this key.",
)
@json_option
def verify(bundle, target, keep, threads, repetitions, allow_cpu, public_key, as_json):
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
    if public_key:  # check.py verifies it first, in the unpacked directory
        check_args += ["--public-key", str(Path(public_key).resolve())]
    report = run_verify(Path(bundle), profile, keep=keep, check_args=check_args)
    refused = public_key and "signature" not in report and report.get("error")
    if as_json:
        emit(report)
    elif refused:  # nothing in the bundle was read: one line, as check.py says it
        click.echo(f"error: {report['error']}", err=True)
    else:
        click.echo(check_text(report))
    code = report.get("exit_code", 2)
    if code:
        sys.exit(code)
