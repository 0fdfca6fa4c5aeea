"""The one ranking key of the planner (on predictions) and of the selection (on measurements).

The profile's objective orders candidates:
- quality: the most retention first, then the fastest decode, then the least memory;
- speed: the fastest decode first, then retention, then memory;
- size: the least memory first (what a small box runs out of), then retention, then speed.
Retentions within the profile's quality_tolerance of the best one count as equal: a quality
objective must not buy a tenth of a point of retention with several times the memory. Below
that, differences under QUALITY_TIE are ties.
"""

from __future__ import annotations

QUALITY_TIE = 0.001


def rank_key(
    objective: str,
    quality: float,
    speed: float,
    memory: float,
    best_quality: float,
    tolerance: float,
    preference: int = 0,
    distilled: bool = False,
) -> tuple:
    """Sort ascending: the first is the best. best_quality is the best of the compared set.

    A candidate that needs a distilled student comes after every one that does not, whatever
    the objective: distillation is a training run whose quality is only a prior until it has
    been done, so it is the answer only when the model itself does not fit."""
    if best_quality - quality <= tolerance + 1e-12:
        quality = best_quality  # within the tolerance: equal on quality
    q = -round(quality / QUALITY_TIE)
    if objective == "speed":
        key = (-speed, q, memory, preference)
    elif objective == "size":
        key = (memory, q, -speed, preference)
    else:
        key = (q, -speed, memory, preference)
    return (distilled, *key)


def dominates(a: dict, b: dict, tolerance: float) -> bool:
    """a is no worse than b on every axis a user weighs and strictly better on memory: less
    peak memory, at least b's decode speed, and retention within the tolerance of b's."""
    return (
        a["memory"] < b["memory"]
        and a["speed"] >= b["speed"]
        and a["quality"] >= b["quality"] - tolerance - 1e-12
    )
