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
@click.option(
    "--emulate",
    is_flag=True,
    help="Install and check an arm64 bundle in an arm64 Debian root under qemu, with the "
    "profile's CPU model: no compiler, no network; speed is reported, not judged (needs root).",
)
@click.option(
    "--emulate-cpu",
    metavar="CPU",
    help="The qemu CPU model for --emulate instead of the profile's (e.g. cortex-a72).",
)
@json_option
def verify(
    bundle, target, keep, threads, repetitions, allow_cpu, public_key, emulate, emulate_cpu,
    as_json,
):  # fmt: skip
    """Check a bundle (directory or .tar.gz): integrity, golden outputs, budgets."""
    from pathlib import Path

    from ..bundle.verify import verify as run_verify
    from ..device.profiles import load_profile
    from .tables import check_text, emulation_text

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
    if emulate_cpu and not emulate:
        raise click.UsageError("--emulate-cpu goes with --emulate")
    emulated = (emulate_cpu or True) if emulate else False
    say = lambda line: click.echo(line, err=True)  # noqa: E731 - progress on stderr
    report = run_verify(
        Path(bundle), profile, keep=keep, check_args=check_args, emulate=emulated, say=say
    )
    if as_json:
        emit(report)
    elif report.get("error"):  # the check could not judge the bundle: one line, as it says it
        click.echo(f"error: {report['error']}", err=True)
    else:
        click.echo(check_text(report))
        if "emulation" in report:
            click.echo(emulation_text(report["emulation"]))
    code = report.get("exit_code", 2)
    if code:
        sys.exit(code)
