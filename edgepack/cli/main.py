"""The command line: the click group, and the one place that turns an EdgepackError into a
one-line message and an exit code (every command module only raises).

One module per command (targets, inspect, plan, build, verify, keygen, distill, prune); heavy
backends are imported by the commands that need them, never at start-up.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_USAGE, EdgepackError
from ..progress import end_bars
from .build import build
from .distill import distill_command
from .inspect import inspect
from .keygen import keygen
from .plan import plan
from .prune import prune_command
from .targets import targets
from .verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepack")
def cli():
    """Plan, export and bundle a Hugging Face model for a device profile."""


for command in (targets, inspect, plan, build, verify, keygen, distill_command, prune_command):
    cli.add_command(command)


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
        from ..build.space import disk_error

        message = disk_error(exc)  # a full or read-only disk is the machine's, not a bug
        if message is not None:
            click.echo(f"error: {message}", err=True)
            code = EXIT_USAGE
        else:
            code = internal(exc)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
