"""The planner: a pure function (ModelFacts, Profile) -> Plan. No I/O, no backend imports.

Candidates are student (the model itself, depth and width students: edgepack.plan.students) x format
x precision. For each one the planner predicts memory
(weights with their quantization scales and what stays unquantized, the KV cache at the target's
context, runtime overhead), disk, decode speed (memory bandwidth / bytes read per token, capped by
compute), first-token latency (prefill compute for a 128-token prompt) and quality (a prior until
measured values exist), checks every budget, says why each rejected candidate fails, and ranks
the rest by the profile's objective.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial

from ..device.profiles import Profile
from ..errors import UnsupportedModelError
from ..export.registry import FORMATS, RUNTIMES, SIZE_TARGETS, Format, Precision
from ..export.registry import size_target as registry_size_target
from ..model.facts import ModelFacts
from .cost import cost
from .needs import needs
from .prediction import PROMPT_TOKENS, Prediction, predict
from .ranking import rank_key
from .student_budget import Training
from .student_budget import sources as budget_sources
from .students import STUDENT_NOTE, Student, students

__all__ = ["Candidate", "Plan", "Prediction", "plan", "predict"]

SCHEMA_VERSION = 1
GB = 1e9


@dataclass(frozen=True)
class Candidate:
    format: str
    precision: str
    bits: int
    runtime: str
    device: str
    student_layers: int | None
    feasible: bool
    reasons: tuple[str, ...]
    violations: tuple[str, ...]  # the budgets it misses: memory, vram, disk, decode, quality, ...
    predicted: Prediction
    rank: int | None = None
    kv_cache: str | None = None  # a smaller KV-cache type than the runtime's default
    cpu_moe_layers: int | None = None  # on a GPU: the first N layers' experts in host RAM
    pruned_mlp: float | None = None  # a width student: the share of MLP channels removed
    # fits by the prediction, but the speed model's interval reaches past a latency budget
    marginal: bool = False
    cost: dict | None = None  # per million tokens, where the profile states a price (plan.cost)

    @property
    def student(self) -> Student:
        return Student(self.student_layers, self.pruned_mlp)

    @property
    def is_student(self) -> bool:
        """Whether it needs a student made first (distilled, or pruned and healed)."""
        return self.student.kind is not None

    @property
    def label(self) -> str:
        student = f", {self.student.describe()}" if self.is_student else ""
        kv = f", KV cache {self.kv_cache}" if self.kv_cache else ""
        moe = ""
        if self.cpu_moe_layers:
            moe = f", experts of {self.cpu_moe_layers} layers in host RAM"
        return f"{self.format} {self.precision}{student}{kv}{moe}"


@dataclass(frozen=True)
class Plan:
    model: dict
    target: str
    objective: str
    budget: dict
    chosen: Candidate | None
    candidates: tuple[Candidate, ...]
    needs: dict | None = None
    schema_version: int = SCHEMA_VERSION
    notes: tuple[str, ...] = field(default=())
    training: dict | None = None  # the student's declared training (plan.student_budget)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["candidates"] = [asdict(c) for c in self.candidates]
        data["chosen"] = asdict(self.chosen) if self.chosen else None
        for cand in [data["chosen"], *data["candidates"]]:
            if cand:
                cand["reasons"] = list(cand["reasons"])
                cand["violations"] = list(cand["violations"])
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        def candidate(c: dict | None) -> Candidate | None:
            if c is None:
                return None
            fields = {**c, "predicted": Prediction.from_dict(c["predicted"])}
            fields["reasons"] = tuple(c["reasons"])
            fields["violations"] = tuple(c["violations"])
            return Candidate(**fields)

        return cls(
            model=data["model"],
            target=data["target"],
            objective=data["objective"],
            budget=data["budget"],
            chosen=candidate(data["chosen"]),
            candidates=tuple(candidate(c) for c in data["candidates"]),
            needs=data.get("needs"),
            schema_version=data["schema_version"],
            notes=tuple(data.get("notes", ())),
            training=data.get("training"),
        )


def plan(
    facts: ModelFacts,
    profile: Profile,
    calibration: dict | None = None,
    training: Training | None = None,
    size_target: float | None = None,
) -> Plan:
    """calibration: {(runtime, precision): (decode factor, prefill factor)} on the fitted
    llama.cpp speed, measured on a host (edgepack.plan.speed_calibration), replacing the
    registry's priors for those rows; training: how the user will train a student
    (edgepack.plan.student_budget; None: edgepack's CPU heal); size_target: bits per weight of
    a size-target candidate added in each format that takes one (edgepack.export.registry)."""
    evaluate = partial(_evaluate, training=training)
    if not facts.formats:
        reasons = "; ".join(f"{name}: {why}" for name, why in facts.unsupported)
        raise UnsupportedModelError(
            f"no format supports {facts.architecture} ({facts.model_type}): {reasons}"
        )
    candidates = [
        evaluate(facts, profile, fmt, precision, s.layers, calibration, pruned_mlp=s.pruned_mlp)
        for s in students(facts)
        for fmt in FORMATS.values()
        if fmt.name in facts.formats
        for precision in fmt.precisions
    ]
    for name in SIZE_TARGETS if size_target is not None else ():  # where a format takes one
        fmt, precision = FORMATS[name], registry_size_target(name, size_target)
        for s in students(facts) if name in facts.formats else ():
            args = (facts, profile, fmt, precision, s.layers, calibration)
            candidates.append(evaluate(*args, pruned_mlp=s.pruned_mlp))
    candidates += _smaller_kv_caches(facts, profile, candidates, calibration, evaluate)
    candidates += _experts_in_host_ram(facts, profile, candidates, evaluate)
    undistilled = [c for c in candidates if c.feasible and not c.is_student]
    pool = undistilled or [c for c in candidates if c.feasible]
    feasible = sorted((c for c in candidates if c.feasible), key=_rank_key(profile, pool))
    ranked = [_with_rank(c, i + 1) for i, c in enumerate(feasible)]
    rejected = [c for c in candidates if not c.feasible]
    notes = []
    if calibration:
        rows = ", ".join(f"{r} {p}" for r, p in sorted(calibration))
        notes.append(f"decode and first token use factors measured on this host: {rows}")
    if any(c.is_student for c in candidates):
        if training is not None and training.beyond_heal:
            notes.append(
                f"students' quality priors for {training.describe()}, from published "
                f"distillation results at the default model's size, scaled to this model's: "
                f"{budget_sources(training.tokens)}"
            )
        else:
            notes.append(STUDENT_NOTE)
    if facts.kind == "encoder":
        notes.append(
            "encoder: no KV cache and no decode budget; first_token_ms is one forward pass"
        )
    return Plan(
        model={
            "path": facts.path,
            "architecture": facts.architecture,
            "num_parameters": facts.num_parameters,
            "num_layers": facts.num_layers,
            "kind": facts.kind,
        },
        target=profile.name,
        objective=profile.objective,
        budget=profile.budget.model_dump(mode="json"),
        chosen=ranked[0] if ranked else None,
        candidates=tuple(ranked + rejected),
        needs=None if ranked else needs(facts, profile, candidates, evaluate, training),
        notes=tuple(notes),
        training=asdict(training) if training is not None else None,
    )


def _smaller_kv_caches(facts, profile, candidates, calibration, evaluate) -> list[Candidate]:
    """A candidate that misses only memory, with a smaller KV-cache type where its runtime
    offers one and that type makes it fit. Chosen only when needed: on small models it saves
    a few MB and can flip near-tied predictions; its effect at the target's context is
    measured by the build (edgepack.measure.kvcache). A student that then misses only its quality
    prior is kept too, rejected, so that the plan can say it would fit."""
    extra = []
    for c in candidates:
        misses = set(c.violations)
        if c.feasible or not misses & {"memory", "vram"}:
            continue
        if not misses - {"quality"} <= {"memory", "vram"} or (
            "quality" in misses and not c.is_student
        ):
            continue
        fmt = FORMATS[c.format]
        for kv, _ in RUNTIMES[fmt.runtime].kv_options:
            precision = fmt.precision(c.precision)
            cand = evaluate(
                facts,
                profile,
                fmt,
                precision,
                c.student_layers,
                calibration,
                kv,
                pruned_mlp=c.pruned_mlp,
            )
            if cand.feasible or (c.is_student and set(cand.violations) == {"quality"}):
                extra.append(cand)
    return extra


def _experts_in_host_ram(facts, profile, candidates, evaluate) -> list[Candidate]:
    """For a mixture of experts on a GPU that misses VRAM: the same candidate with the experts
    of the fewest first layers in host RAM that fits VRAM (llama.cpp's --n-cpu-moe), where its
    runtime offers that. Kept whatever else it misses, so the plan shows both memories; a
    candidate that misses VRAM with every layer's experts in host RAM is left out."""
    extra = []
    for c in candidates:
        runtime = RUNTIMES[c.runtime]
        if not (facts.num_experts and c.device == "gpu" and runtime.expert_offload):
            continue
        if "vram" not in c.violations or c.kv_cache:
            continue
        fmt = FORMATS[c.format]
        precision = fmt.precision(c.precision)
        kept = c.student_layers or facts.num_layers

        def offload(n: int, fmt=fmt, precision=precision, c=c) -> Candidate:
            return evaluate(facts, profile, fmt, precision, c.student_layers, cpu_moe=n)

        if "vram" in offload(kept).violations:
            continue
        low, high = 1, kept  # VRAM falls as layers move to the host: the fewest that fit
        while low < high:
            mid = (low + high) // 2
            if "vram" in offload(mid).violations:
                low = mid + 1
            else:
                high = mid
        extra.append(offload(low))
    return extra


def _with_rank(c: Candidate, rank: int) -> Candidate:
    return Candidate(**{**c.__dict__, "rank": rank})


def _speed(c: Candidate) -> float:
    return c.predicted.decode_tokens_per_s or 1000.0 / c.predicted.first_token_ms


def _rank_key(profile: Profile, pool: list[Candidate]):
    """The ranking key, with the best quality, memory and speed of the undistilled feasible
    candidates (of all feasible ones when none is undistilled)."""
    best_quality = max((c.predicted.quality for c in pool), default=0)
    best_memory = min((c.predicted.memory_bytes for c in pool), default=None)
    best_speed = max((_speed(c) for c in pool), default=None)

    def key(c: Candidate):
        return rank_key(
            profile.objective,
            c.predicted.quality,
            _speed(c),
            c.predicted.memory_bytes,
            best_quality,
            profile.quality_tolerance,
            profile.runtimes.prefer.index(c.runtime),
            distilled=c.is_student,
            best_memory=best_memory,
            best_speed=best_speed,
        )

    return key


def _evaluate(
    facts: ModelFacts,
    profile: Profile,
    fmt: Format,
    precision: Precision,
    layers: int | None,
    calibration: dict | None = None,
    kv: str | None = None,
    cpu_moe: int | None = None,
    pruned_mlp: float | None = None,
    training: Training | None = None,
) -> Candidate:
    runtime = RUNTIMES[fmt.runtime]
    gpu = profile.gpu
    on_gpu = gpu is not None and "gpu" in precision.devices and runtime.gpu_overhead_bytes > 0
    budget = profile.budget
    factors = None if on_gpu else (calibration or {}).get((fmt.runtime, precision.name))
    p = predict(
        facts, profile, fmt, precision, layers, on_gpu, factors, kv, cpu_moe, pruned_mlp, training
    )
    found: list[tuple[str, str]] = []  # (violation code, reason)

    def miss(code: str, text: str) -> None:
        found.append((code, text))

    if fmt.runtime not in profile.runtimes.prefer:
        allowed = ", ".join(profile.runtimes.prefer)
        miss("runtime", f"runtime {fmt.runtime} is not among the target's runtimes ({allowed})")
    if "cpu" not in precision.devices and not on_gpu:
        miss("device", f"{fmt.name} {precision.name} runs only on a GPU and the target has none")
    if on_gpu and precision.bits == 16 and not gpu.fp16:
        miss("device", f"{gpu.name} has no fp16 support")
    if on_gpu:
        if p.memory_bytes > budget.accelerator_memory_gb * GB:
            miss("vram", f"VRAM {p.arithmetic} > budget {budget.accelerator_memory_gb:g} GB")
        if p.host_memory_bytes > budget.memory_gb * GB:
            host = p.host_arithmetic or f"{p.host_memory_bytes / GB:.2f} GB"
            miss("memory", f"host memory {host} > budget {budget.memory_gb:g} GB")
    elif p.memory_bytes > budget.memory_gb * GB:
        miss("memory", f"memory {p.arithmetic} > budget {budget.memory_gb:g} GB")
    if p.disk_bytes > budget.disk_gb * GB:
        miss("disk", f"disk {p.disk_bytes / GB:.2f} GB > budget {budget.disk_gb:g} GB")
    if p.first_token_ms > budget.first_token_ms:
        miss(
            "first_token",
            f"first token {p.first_token_ms:,.0f} ms for a {PROMPT_TOKENS}-token prompt "
            f"> budget {budget.first_token_ms:,.0f} ms",
        )
    decode = p.decode_tokens_per_s
    if decode is not None and decode < budget.decode_tokens_per_s:
        miss("decode", f"decode {decode:.1f} tok/s < budget {budget.decode_tokens_per_s:g} tok/s")
    if p.quality < budget.min_quality:
        miss("quality", f"quality prior {p.quality:.3f} < floor {budget.min_quality:g}")

    reasons = [text for _, text in found]
    marginal = []
    if not found:
        host = f"; host {p.host_arithmetic}" if p.host_arithmetic else ""
        reasons.append(f"fits: {'VRAM' if on_gpu else 'memory'} {p.arithmetic}{host}")
        marginal = _marginal(p, budget)
        reasons += marginal
    return Candidate(
        format=fmt.name,
        precision=precision.name,
        bits=precision.bits,
        runtime=fmt.runtime,
        device="gpu" if on_gpu else "cpu",
        student_layers=layers,
        feasible=not found,
        reasons=tuple(reasons),
        violations=tuple(code for code, _ in found),
        predicted=p,
        kv_cache=kv,
        cpu_moe_layers=cpu_moe or None,
        pruned_mlp=pruned_mlp,
        marginal=bool(marginal),
        cost=cost(profile, p),
    )


def straddled(p: Prediction, budget) -> list[str]:
    """The latency budgets ("decode", "first token") inside the prediction's speed interval
    (the speed model's held-out errors, 10th to 90th percentile)."""
    out = []
    low, high = p.decode_tokens_per_s_low, p.decode_tokens_per_s_high
    if low is not None and low < budget.decode_tokens_per_s <= (high or low):
        out.append("decode")
    if p.first_token_ms_low <= budget.first_token_ms < p.first_token_ms_high:
        out.append("first token")
    return out


def _marginal(p: Prediction, budget) -> list[str]:
    """Why a fitting candidate is marginal: its speed interval straddles a latency budget."""
    out = []
    low, phases = p.decode_tokens_per_s_low, straddled(p, budget)
    if "decode" in phases:
        out.append(
            f"marginal: decode {low:.1f}-{p.decode_tokens_per_s_high:.1f} tok/s (the speed "
            f"model's interval) reaches below the budget {budget.decode_tokens_per_s:g} tok/s"
        )
    if "first token" in phases:
        out.append(
            f"marginal: first token {p.first_token_ms_low:,.0f}-{p.first_token_ms_high:,.0f} ms "
            f"(the speed model's interval) reaches past the budget "
            f"{budget.first_token_ms:,.0f} ms"
        )
    return out
