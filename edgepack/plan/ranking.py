"""The one ranking key of the planner (on predictions) and of the selection (on measurements).

The profile's objective orders candidates:
- quality: the most retention first, then the fastest decode, then the least memory;
- speed: the fastest decode first, then retention, then memory;
- size: the least memory first (what a small box runs out of), then retention, then speed.
Retentions within the profile's quality_tolerance of the best one count as equal: a quality
objective must not buy a tenth of a point of retention with several times the memory. Below
that, differences under QUALITY_TIE are ties. Likewise peak memories within MEMORY_TOLERANCE of
the smallest, and decode speeds within SPEED_TOLERANCE of the fastest, count as equal: the size
objective must not give up four points of retention for 2 MB of 235 (the default model's gguf
q5_k_m against q4_k_m for edge-4gb: 233 MB at retention 0.919, 235 MB at 0.963). The raw figure
of the objective's own axis breaks what is left of a tie.
"""

from __future__ import annotations

QUALITY_TIE = 0.001
# Peak RSS of one bundle varies by about 1 % from run to run, and the memory model predicts it
# within 2 % for most registry rows (README, "Memory model"): a 5 % smaller bundle is smaller.
MEMORY_TOLERANCE = 0.05
# Decode speed varies more: on the 2-core build host, a check's p95 is ~5 % under its p50, and
# three gguf 4/5-bit bundles of the default model measured 58-61 tok/s in one build.
SPEED_TOLERANCE = 0.10


def rank_key(
    objective: str,
    quality: float,
    speed: float,
    memory: float,
    best_quality: float,
    tolerance: float,
    preference: int = 0,
    distilled: bool = False,
    best_memory: float | None = None,
    best_speed: float | None = None,
) -> tuple:
    """Sort ascending: the first is the best. best_quality, best_memory (the smallest) and
    best_speed (the fastest) are those of the compared set; without the last two, memory and
    speed compare as they are.

    A candidate that needs a distilled student comes after every one that does not, whatever
    the objective: distillation is a training run whose quality is only a prior until it has
    been done, so it is the answer only when the model itself does not fit."""
    q_eq = best_quality if best_quality - quality <= tolerance + 1e-12 else quality
    m_eq = memory
    if best_memory is not None and memory <= best_memory * (1 + MEMORY_TOLERANCE):
        m_eq = best_memory
    s_eq = speed
    if best_speed is not None and speed >= best_speed * (1 - SPEED_TOLERANCE):
        s_eq = best_speed
    q, q_raw = -round(q_eq / QUALITY_TIE), -round(quality / QUALITY_TIE)
    if objective == "speed":
        key = (-s_eq, q, m_eq, -speed, memory, preference)
    elif objective == "size":
        key = (m_eq, q, -s_eq, memory, q_raw, preference)
    else:
        key = (q, -s_eq, m_eq, q_raw, -speed, memory, preference)
    return (distilled, *key)


def dominates(a: dict, b: dict, tolerance: float) -> bool:
    """a is no worse than b on every axis a user weighs and strictly better on memory: less
    peak memory, at least b's decode speed, and retention within the tolerance of b's."""
    return (
        a["memory"] < b["memory"]
        and a["speed"] >= b["speed"]
        and a["quality"] >= b["quality"] - tolerance - 1e-12
    )
