"""Selection: which candidates a build measures, which measured one it keeps, and why.

No backend and no I/O: a Trial carries what the build measured (quality in the runtime, the
bundle's own check on this host, the device prediction refined by it), and the functions
here only read it, so they are unit-tested from tables.

The gate rejects a trial whose host check ended in ERROR or missed its golden outputs, whose
retention interval's lower bound is under the floor, or whose measured peak memory or bundle
size is over the budget. Among the rest, the profile's objective decides (edgepack.plan.ranking,
the planner's key), on the device's speed: the host's measurement where host and device are
the same kind of machine, else the prediction for the device. The kept trial is
never dominated by another accepted one (less memory, at least its speed, retention within
the tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..device.profiles import Profile
from ..errors import EdgepackError, PlanError
from ..export.base import is_weight_file, size_figures
from ..export.registry import FORMATS, resolve
from ..plan.cost import at_decode
from ..plan.planner import GB, Candidate, Plan
from ..plan.ranking import dominates, rank_key


@dataclass
class Trial:
    """One candidate for one target: staged as a bundle, measured on this host."""

    candidate: Candidate
    quality: dict
    staging: Path | None
    manifest: dict
    check: dict
    reasons: list[str] = field(default_factory=list)
    fallback_for: str | None = None  # the 4-bit candidate whose miss brought this one in
    # the target's speeds, refined by this host (edgepack.plan.speed_calibration)
    device_prediction: dict | None = None
    metric: str = "perplexity"  # what the target's floor judges: its budget.quality_metric

    @property
    def measured(self) -> dict:
        return self.check.get("measured") or {}

    @property
    def disk_bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest.get("files", []))

    def size(self) -> dict:
        """The model's weight files: bytes, bits per weight, and how much smaller than fp32."""
        weights = sum(
            f["bytes"]
            for f in self.manifest.get("files", [])
            if f["path"].startswith("model/") and is_weight_file(f["path"])
        )
        return size_figures(weights, self.candidate.predicted.parameters)

    @property
    def judged(self) -> dict:
        """The retention the floor judges: perplexity's (self.quality), or task accuracy's
        (`--eval-tasks`, for a target whose budget.quality_metric is "tasks")."""
        if self.metric != "tasks":
            return self.quality
        tasks = self.quality.get("tasks") or {}
        keys = ("retention", "retention_low", "retention_high", "items", "task_set")
        return {k: tasks.get(k) for k in keys} | {"retention": tasks.get("retention") or 0.0}

    @property
    def retention(self) -> float:
        return self.judged["retention"]

    @property
    def retention_low(self) -> float:
        """The lower bound of the retention interval (the point estimate where none)."""
        low = self.judged.get("retention_low")
        return self.retention if low is None else low

    @property
    def memory(self) -> float:
        """Peak memory for ranking: measured on this host (it carries over to the device, same
        artifact and runtime, but for a tied table llama.cpp repacks on one CPU and not the
        other, which only the plan's prediction counts: edgepack.plan.llamacpp_repack), else
        predicted; on a GPU the predicted VRAM."""
        peak = self.measured.get("peak_rss_bytes")
        if self.candidate.device == "cpu" and peak:
            return float(peak)
        return float(self.candidate.predicted.memory_bytes)

    @property
    def speed(self) -> float:
        """Decode speed for ranking: the device's (see the module docstring)."""
        device = self.device_prediction or {}
        by_device = device.get("ranked_by") == "device prediction"
        if by_device and device.get("decode_tokens_per_s") is not None:
            return float(device["decode_tokens_per_s"])
        measured = self.measured.get("decode_tokens_per_s_p50")
        if measured is not None:
            return float(measured)
        return float(self.candidate.predicted.decode_tokens_per_s or 0.0)

    def axes(self) -> dict:
        return {"memory": self.memory, "speed": self.speed, "quality": self.retention}

    def row(self, chosen: bool) -> dict:
        m, c, q = self.measured, self.candidate, self.quality
        return {
            "format": c.format,
            "precision": c.precision,
            "bits": c.bits,
            "student_layers": c.student_layers,
            "runtime": c.runtime,
            "device": c.device,
            "chosen": chosen,
            "quality_metric": self.metric,
            "fallback_for": self.fallback_for,
            "accepted": not self.reasons,
            "status": self.check.get("verdict", "not checked").lower(),
            "reasons": self.reasons,
            "predicted": {
                "memory_bytes": c.predicted.memory_bytes,
                "disk_bytes": c.predicted.disk_bytes,
                "decode_tokens_per_s": c.predicted.decode_tokens_per_s,
                "decode_tokens_per_s_low": c.predicted.decode_tokens_per_s_low,
                "decode_tokens_per_s_high": c.predicted.decode_tokens_per_s_high,
                "first_token_ms": c.predicted.first_token_ms,
                "first_token_ms_low": c.predicted.first_token_ms_low,
                "first_token_ms_high": c.predicted.first_token_ms_high,
                "quality": c.predicted.quality,
            },
            "measured": {
                "retention": q.get("retention"),
                "retention_low": q.get("retention_low"),
                "retention_high": q.get("retention_high"),
                "eval_tokens": q.get("eval_tokens"),
                "perplexity": q.get("perplexity"),
                "kl_divergence_mean": q.get("kl_divergence_mean"),
                "tasks": q.get("tasks"),
                "disk_bytes": self.disk_bytes,
                **self.size(),
                "peak_rss_bytes": m.get("peak_rss_bytes"),
                "decode_tokens_per_s": m.get("decode_tokens_per_s_p50"),
                "first_token_ms": m.get("first_token_ms_p50"),
                "threads": m.get("threads"),
            },
            "device_prediction": self.device_prediction,
            # per million tokens at the device's decode: the build's refined one where made
            "cost": c.cost and at_decode(
                c.cost,
                c.predicted.decode_tokens_per_s,
                (self.device_prediction or {}).get("decode_tokens_per_s"),
            ),
        }


def select(
    p: Plan, format_name: str | None, precision_name: str | None, k: int = 1
) -> tuple[list[Candidate], bool]:
    """The candidates to build and measure: the plan's best k undistilled ones, or the best
    match of an override. build() turns a plan that needs a student into a student first, so
    a plan with no undistilled candidate here is a student's that needs a smaller one."""
    if not format_name and not precision_name:
        if p.chosen is None:
            raise PlanError(p.needs["message"], plan=p)
        ranked = [c for c in p.candidates if c.feasible and not c.is_student]
        if not ranked:
            raise PlanError(
                f"the distilled student does not fit {p.target}: its plan needs a "
                f"{p.chosen.student.describe()} of it; relax the target's budgets",
                plan=p,
            )
        return ranked[:k], False
    if format_name and precision_name:
        try:
            _, precision = resolve(format_name, precision_name)
        except ValueError as exc:
            raise EdgepackError(str(exc)) from None
        names = {precision.name}
    else:
        names = {precision_name} if precision_name else None
    if format_name and format_name not in FORMATS:
        raise EdgepackError(f"unknown format {format_name!r}; formats: {', '.join(FORMATS)}")
    matches = []
    for c in p.candidates:
        if c.is_student or (format_name and c.format != format_name):
            continue
        fmt_precision = FORMATS[c.format].precision(c.precision)
        if names and not names & {fmt_precision.name, fmt_precision.alias}:
            continue
        matches.append(c)
    if not matches:
        raise EdgepackError(
            f"no candidate {format_name or ''} {precision_name or ''} for this model; see "
            "`edgepack plan` for the candidates"
        )
    feasible = [c for c in matches if c.feasible]
    return [(feasible or matches)[0]], True


def interval_text(quality: dict) -> str:
    """'0.9120 (95 % interval 0.8970-0.9250 over 4096 tokens of wikitext-2-test)', or over
    the items of a task set where the floor judges task accuracy."""
    text = f"{quality['retention']:.4f}"
    low, high = quality.get("retention_low"), quality.get("retention_high")
    if low is not None and high is not None:
        text += f" (95 % interval {low:.4f}-{high:.4f}"
        if quality.get("eval_tokens"):
            text += f" over {quality['eval_tokens']} tokens of {quality.get('eval_text', 'text')}"
        elif quality.get("items"):
            text += f" over {quality['items']} items of the {quality.get('task_set')} tasks"
        text += ")"
    return text


def gate(profile: Profile, trial: Trial) -> list[str]:
    """Every reason this measured trial cannot be the bundle (appended to trial.reasons)."""
    budget, check = profile.budget, trial.check
    reasons = trial.reasons
    if check.get("verdict") == "ERROR":
        reasons.append(f"its check ended in ERROR on this host: {check.get('error', '?')}")
    for c in check.get("checks", []):
        if c["name"].startswith("golden") and not c["pass"]:
            reasons.append(f"its check failed {c['name']} on this host")
    if trial.retention_low < budget.min_quality:
        judged = trial.judged
        bound = "has its lower bound" if judged.get("retention_low") is not None else "is"
        what = "task accuracy retention" if trial.metric == "tasks" else "retention"
        reasons.append(
            f"{what} {interval_text(judged)} {bound} below the floor {budget.min_quality:g}"
        )
    peak = trial.measured.get("peak_rss_bytes")
    if trial.candidate.device == "cpu" and peak and peak > budget.memory_gb * GB:
        reasons.append(f"measured peak memory {peak / GB:.2f} GB > {budget.memory_gb:g} GB")
    if trial.disk_bytes > budget.disk_gb * GB:
        reasons.append(f"bundle {trial.disk_bytes / GB:.2f} GB > disk budget {budget.disk_gb:g} GB")
    return reasons


def choose(profile: Profile, trials: list[Trial]) -> Trial | None:
    """The best trial the gate accepts, by the profile's objective; never a dominated one."""
    for t in trials:
        gate(profile, t)
    accepted = [t for t in trials if not t.reasons]
    if not accepted:
        return None
    tolerance = profile.quality_tolerance
    best_quality = max(t.retention for t in accepted)
    best_memory = min(t.memory for t in accepted)
    best_speed = max(t.speed for t in accepted)

    def key(t: Trial):
        return rank_key(
            profile.objective,
            t.retention,
            t.speed,
            t.memory,
            best_quality,
            tolerance,
            best_memory=best_memory,
            best_speed=best_speed,
        )

    best = min(accepted, key=key)
    while True:
        better = [t for t in accepted if dominates(t.axes(), best.axes(), tolerance)]
        if not better:
            return best
        best = min(better, key=key)


def mixed_fallback(
    p: Plan, profile: Profile, trial: Trial, tried: list[Candidate]
) -> Candidate | None:
    """The mixed-precision variant of a 4-bit candidate that missed the floor, if not tried."""
    c = trial.candidate
    if c.bits != 4 or trial.retention_low >= profile.budget.min_quality:
        return None
    mixed = FORMATS[c.format].precision(c.precision).mixed
    if mixed is None or (c.format, mixed) in {(t.format, t.precision) for t in tried}:
        return None
    return next(
        (
            m
            for m in p.candidates
            if m.format == c.format
            and m.precision == mixed
            and m.student == c.student
            and m.device == c.device
            and not set(m.violations) - {"quality"}
        ),
        None,
    )


def gate_message(profile: Profile, p: Plan, trials: list[Trial]) -> str:
    """Why no candidate was accepted, the mixed-precision variants tried, and the next
    candidate worth trying."""
    firsts = [t for t in trials if t.fallback_for is None] or trials
    best = max(firsts, key=lambda t: t.retention)
    candidate, quality = best.candidate, best.judged
    tried = {(t.candidate.format, t.candidate.precision) for t in trials}
    predicted = max(t.candidate.predicted.quality for t in trials)
    better = [
        c
        for c in p.candidates
        if c.student == candidate.student
        and (c.format, c.precision) not in tried
        and c.predicted.quality > predicted
        and not set(c.violations) - {"quality"}
    ]
    hint = "no other candidate of this plan is predicted to keep more"
    if better:
        nxt = min(better, key=lambda c: (not c.feasible, c.bits, -c.predicted.quality))
        hint = f"next worth trying: --format {nxt.format} --precision {nxt.precision}"
    what = "task accuracy retention" if best.metric == "tasks" else "retention"
    measured = f"{what} {quality['retention']:.4f}"
    if "perplexity" in quality:
        measured += (
            f" (perplexity {quality['perplexity']:.2f} vs the reference's "
            f"{quality['reference_perplexity']:.2f})"
        )
    others = f" ({len(firsts)} candidates measured)" if len(firsts) > 1 else ""
    why = "; ".join(best.reasons)
    mixed = [t for t in trials if t.fallback_for is not None]
    if mixed:
        kept = ", ".join(f"{t.candidate.label} {t.retention:.4f}" for t in mixed)
        why += f"; the mixed-precision variants tried keep {kept}"
    return (
        f"{candidate.label} keeps {measured}{others}: {why}; nothing fits {profile.name}'s "
        f"floor {profile.budget.min_quality:g}, no bundle written; {hint}"
    )
