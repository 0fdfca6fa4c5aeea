"""What would make a plan when nothing fits: the smallest memory budget, or, where memory is not
what binds, how much faster the device would have to be; the best student that misses only its
quality prior, or the largest depth student that fits. Pure, like the planner: `evaluate` is the
planner's candidate evaluation."""

from __future__ import annotations

import math

from ..device.profiles import Profile
from ..export.registry import FORMATS
from ..model.facts import ModelFacts

GB = 1e9

MEMORY_CODES = frozenset({"memory", "vram", "disk"})
LATENCY_CODES = frozenset({"first_token", "decode"})
UNRUNNABLE_CODES = frozenset({"runtime", "device"})


def needs(facts: ModelFacts, profile: Profile, candidates: list, evaluate, training=None) -> dict:
    """What would make a plan: the smallest memory budget, or the student size, that fits;
    for a student that misses only its quality prior, the training budget at which published
    distillation results reach the floor (edgepack.plan.student_budget)."""
    runnable = [c for c in candidates if not UNRUNNABLE_CODES & set(c.violations)]
    only_size = [c for c in runnable if set(c.violations) <= MEMORY_CODES]
    pool = (
        only_size
        or [c for c in runnable if "quality" not in c.violations]
        or runnable
        or candidates
    )
    smallest = min(pool, key=lambda c: c.predicted.memory_bytes)
    memory_gb = math.ceil(smallest.predicted.memory_bytes / GB * 100) / 100
    budget_key = "accelerator_memory_gb" if smallest.device == "gpu" else "memory_gb"
    student = _largest_student_that_fits(facts, profile, evaluate)
    hint = f"{budget_key} >= {memory_gb:g} ({smallest.label})"
    binding = sorted({v for v in smallest.violations if v not in MEMORY_CODES})
    if binding:
        hint += f", which also misses: {', '.join(binding)}"
    slow = _too_slow(profile, runnable)
    extra = {}
    if slow is not None:  # memory holds a candidate: the latency budgets are what binds
        fastest, speedup, detail = slow
        smallest, extra = fastest, {"speedup": round(speedup, 2)}
        hint = (
            f"a device about {speedup:.1f}x faster (its memory holds {fastest.label}, but "
            f"{detail}), or looser latency budgets"
        )
    under_floor = [c for c in candidates if c.is_student and set(c.violations) == {"quality"}]
    if under_floor:  # a student fits every budget but the floor, on its prior
        best = max(under_floor, key=lambda c: c.predicted.quality)
        floor = profile.budget.min_quality
        if training is not None and training.beyond_heal:
            how = f"with {training.describe()}"
            more = "no published result reaches further"
        else:
            how = "after distillation on the built-in text"
            more = _budget_to_floor(facts, profile, under_floor, evaluate, extra)
        hint += (
            f", or a student: {best.label} fits, but its quality prior "
            f"{best.predicted.quality:.3f} {how} is under the floor {floor:g} ({more})"
        )
    elif student:
        hint += (
            f", or a student of at most {student} layers, which fits {budget_key} "
            f"{getattr(profile.budget, budget_key):g} (quality to be measured after distillation)"
        )
    return {
        budget_key: memory_gb,
        "candidate": {
            "format": smallest.format,
            "precision": smallest.precision,
            "student_layers": smallest.student_layers,
            "pruned_mlp": smallest.pruned_mlp,
        },
        "student_layers": student,
        **extra,
        "message": f"nothing fits {profile.name}: it would need {hint}",
    }


def _budget_to_floor(facts, profile, under_floor, evaluate, extra: dict) -> str:
    """The smallest published training budget at which one of these students' priors reaches
    the floor, as a hint (and extra["distill_tokens"]); or why none does."""
    from .student_budget import BUDGETS, Training, reached

    floor = profile.budget.min_quality
    best = None
    for tokens in BUDGETS:
        for c in under_floor:
            fmt = FORMATS[c.format]
            cand = evaluate(
                facts, profile, fmt, fmt.precision(c.precision), c.student_layers,
                kv=c.kv_cache, pruned_mlp=c.pruned_mlp, training=Training(tokens, gpu=True),
            )  # fmt: skip
            best = max(best or cand, cand, key=lambda x: x.predicted.quality)
            if cand.predicted.quality >= floor:
                extra["distill_tokens"] = tokens
                names = ", ".join(p.name.split(",")[0] for p in reached(tokens))
                return (
                    f"published distillation results reach it with {tokens:,} tokens on GPUs, "
                    f"{cand.label} {cand.predicted.quality:.3f} ({names}): plan with "
                    f"--distill-tokens {tokens} --distill-gpu; `edgepack distill --data` "
                    "trains on your text"
                )
    return (
        f"no published distillation result reaches it: with {BUDGETS[-1]:,} tokens on GPUs the "
        f"best prior is {best.label} {best.predicted.quality:.3f}"
    )


def _too_slow(profile: Profile, runnable: list):
    """Where some candidate fits memory and disk and keeps the quality floor but every such one
    misses a latency budget: the one closest to its budgets, how many times faster the device
    would have to be, and its figures against the budgets. None where memory binds."""
    ok = [c for c in runnable if not (MEMORY_CODES | {"quality"}) & set(c.violations)]
    if not ok or any(c.feasible for c in ok):
        return None
    budget = profile.budget

    def shortfall(c) -> float:
        p = c.predicted
        first = p.first_token_ms / budget.first_token_ms
        decode = budget.decode_tokens_per_s / p.decode_tokens_per_s if p.decode_tokens_per_s else 0
        return max(first, decode, 1.0)

    best = min(ok, key=shortfall)
    p, parts = best.predicted, []
    if p.first_token_ms > budget.first_token_ms:
        parts.append(
            f"its first token takes {p.first_token_ms:,.0f} ms against {budget.first_token_ms:,.0f}"
        )
    if p.decode_tokens_per_s is not None and p.decode_tokens_per_s < budget.decode_tokens_per_s:
        parts.append(
            f"it decodes {p.decode_tokens_per_s:.1f} tok/s against "
            f"{budget.decode_tokens_per_s:g}"
        )
    return best, shortfall(best), " and ".join(parts)


def _largest_student_that_fits(facts: ModelFacts, profile: Profile, evaluate) -> int | None:
    """The most layers any runnable format and precision fits into the memory and disk budgets
    (memory grows with the layers kept: a binary search)."""
    if facts.kind != "decoder":
        return None

    def fits(layers: int) -> bool:
        for fmt in FORMATS.values():
            if fmt.name not in facts.formats:
                continue
            for precision in fmt.precisions:
                cand = evaluate(facts, profile, fmt, precision, layers)
                if not (MEMORY_CODES | UNRUNNABLE_CODES) & set(cand.violations):
                    return True
        return False

    low, high = 0, facts.num_layers - 1  # fits(low) holds by convention; find the largest
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low or None
