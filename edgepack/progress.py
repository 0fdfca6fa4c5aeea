"""Progress on stderr: one bar per long job, its steps named as they start."""

from __future__ import annotations

import time

from .liblog import before_terminal_closes, terminal


class Steps:
    """A tqdm bar over a job's steps; `note` shows what a step is doing right now."""

    open_bars: list[Steps] = []  # the bars an error must end before its message is printed

    def __init__(self, description: str, total: int):
        from tqdm import tqdm

        self.started = time.monotonic()
        self.bar = tqdm(
            total=total,
            desc=description,
            file=terminal(),
            leave=True,
            bar_format="{desc}: {n}/{total} {bar:20} {elapsed} {postfix}",
        )
        Steps.open_bars.append(self)

    def advance(self, step: str, n: int = 1) -> None:
        self.bar.update(n)
        self.note(step)

    def note(self, message: str) -> None:
        self.bar.set_postfix_str(message[:70])

    def close(self, status: str = "done") -> None:
        if self in Steps.open_bars:
            Steps.open_bars.remove(self)
        self.bar.set_postfix_str(status)
        self.bar.close()


def end_bars() -> None:
    """End every open bar on its own line, so that an error message starts a line of its own."""
    for steps in list(Steps.open_bars):
        steps.close("stopped")


before_terminal_closes(end_bars)
