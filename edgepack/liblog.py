"""Libraries' own output kept off the terminal, in a log the user can open.

While a long command works, file descriptors 1 and 2 point to a log file under the cache
(`logs/COMMAND-TIME-PID.log`): what torch, transformers, optimum, NNCF, ONNX Runtime, OpenVINO
and llama.cpp print, from Python or from C, and what their child processes print, lands there.
edgepack's own progress bars and notes go to the terminal's stderr through `terminal()`;
the command's result (text or `--json`) is printed after the block, on the real stdout. At the
end the log's path is printed on stderr where it holds anything; an empty log is removed, so
that an input error stays a one-line message.
EDGEPACK_VERBOSE=1 leaves everything on the terminal.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from pathlib import Path

KEEP = 20  # the newest logs kept
_terminal = None
# called before the terminal stream closes (edgepack.progress ends its open bars there)
_before_close: list = []


def before_terminal_closes(fn) -> None:
    """Call fn() before the terminal stream of a libraries_to_log block is closed."""
    if fn not in _before_close:
        _before_close.append(fn)


def terminal():
    """The stream for edgepack's own progress and notes: the terminal's stderr."""
    return _terminal or sys.stderr


def say(line: str) -> None:
    """One of edgepack's own notes, on the terminal (never stdout, which --json owns)."""
    print(line, file=terminal())


def secondary_process() -> bool:
    """A process other than the first of a multi-process run (torchrun, accelerate launch):
    it works as the others do but stays quiet, so that the terminal reads as one run."""
    return os.environ.get("RANK", "0") not in ("", "0")


@contextlib.contextmanager
def libraries_to_log(command: str):
    global _terminal
    if os.environ.get("EDGEPACK_VERBOSE") or _terminal is not None:
        yield None
        return
    from .cache import cache_root

    folder = cache_root() / "logs"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"{command}-{stamp}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _prune(folder)
        log = open(path, "ab", buffering=0)  # noqa: SIM115 - its fd is duplicated below
    except OSError:  # a read-only cache: the libraries stay on the terminal
        yield None
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    _terminal = os.fdopen(os.dup(saved_err), "w", buffering=1, encoding="utf-8")
    with log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield path
    finally:
        for fn in _before_close:  # on the terminal stream, before it closes
            fn()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        try:  # named where there is something to read; an empty log is removed
            if path.stat().st_size and not secondary_process():
                print(f"edgepack: the libraries' messages are in {path}", file=_terminal)
            else:
                path.unlink()
        except OSError:
            pass
        _terminal.close()
        _terminal = None


def _prune(folder: Path) -> None:
    """Keep the newest KEEP - 1 logs (another process may remove one meanwhile)."""
    logs = []
    for p in folder.glob("*.log"):
        try:
            logs.append((p.stat().st_mtime, p))
        except OSError:
            continue
    for _, old in sorted(logs)[: max(0, len(logs) - KEEP + 1)]:
        old.unlink(missing_ok=True)
