"""Memory, known before the work: what each picked candidate's build will hold on this machine
(the plan's build_memory_bytes, edgepack.plan.build_host) against this machine's RAM (or the
cgroup limit below it, as `edgepack targets --detect` reads them).

A candidate whose build would not fit stops the build in one line before any work, naming the
stage that needs the most, what would fit instead (another format of the same plan, predicted
to fit), and the machine that would build it. A build that fits the RAM but not what is
available now only gets a note: other programs may give memory back, and the kernel's page
cache (counted as available) gives it back by itself.
"""

from __future__ import annotations

import math

from ..device.detect import available_memory, host_memory
from ..errors import EdgepackError
from ..liblog import say

GB = 1e9
MARGIN = 1.1  # the prediction's error on the measured stages is within 10 %


class HostMemoryError(EdgepackError):
    """A build that would not fit this machine's memory (exit 2)."""


def check_memory(todo, ram: int | None = None, available: int | None = None) -> dict:
    """Raise HostMemoryError where a picked candidate's build would not fit this machine;
    return {candidate label: predicted peak bytes}. todo: (source, profile, plan, picked,
    forced) per target, as edgepack.build.pipeline builds it."""
    if ram is None:
        total, limit = host_memory()
        ram = limit or total
    if available is None:
        available = available_memory()
    needs = {}
    for _source, profile, plan, picked, _forced in todo:
        for c in picked:
            need = c.predicted.build_memory_bytes
            needs[c.label] = need
            if need * MARGIN > ram:
                raise HostMemoryError(_refusal(profile.name, c, plan, ram))
            if available and need * MARGIN > available:
                say(
                    f"note: building {c.label} needs about {need * MARGIN / GB:.1f} GB of memory "
                    f"(its {c.predicted.build_stage} stage), {available / GB:.1f} GB is "
                    "available now; close other programs if it runs out"
                )
    return needs


def _refusal(target: str, c, plan, ram: int) -> str:
    need = c.predicted.build_memory_bytes * MARGIN
    fits = [
        o
        for o in plan.candidates
        if o.feasible and o.predicted.build_memory_bytes * MARGIN <= ram and o.format != c.format
    ]
    instead = f"--format {fits[0].format} --precision {fits[0].precision}" if fits else None
    machine = math.ceil(need / GB)
    return (
        f"{target}: building {c.label} needs about {need / GB:.1f} GB of memory on this machine "
        f"(its {c.predicted.build_stage} stage, predicted), more than its {ram / GB:.1f} GB; "
        + (f"build {instead}, or " if instead else "")
        + f"build on a machine with at least {machine} GB"
    )

