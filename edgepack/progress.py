"""Progress on stderr: one bar per long job, its steps named as they start."""

from __future__ import annotations

import time

from .liblog import terminal


class Steps:
    """A tqdm bar over a job's steps; `note` shows what a step is doing right now."""

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

    def advance(self, step: str, n: int = 1) -> None:
        self.bar.update(n)
        self.note(step)

    def note(self, message: str) -> None:
        self.bar.set_postfix_str(message[:70])

    def close(self) -> None:
        self.bar.set_postfix_str("done")
        self.bar.close()
