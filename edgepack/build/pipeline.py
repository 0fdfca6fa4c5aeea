"""`edgepack build`: plan, export, validate, write one bundle per target, check it on this host.

Flow per target: plan(facts, profile) -> the chosen candidate (or the --format/--precision
override) -> export (shared between targets that chose the same variant) -> validation against
the PyTorch reference (fatal) -> golden outputs -> bundle in a staging directory -> the
bundle's own check.py in a subprocess on this host -> recorded in the manifest -> atomic rename
and tarball.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bundle.install import keep_installable
from ..bundle.kit import load_runner
from ..bundle.publish import publish, write_manifest
from ..bundle.report import write_report
from ..bundle.signing import prepare_signed, sign, verification_requirements
from ..compress.make_student import distil_student, student_message
from ..device.profiles import Profile
from ..errors import EdgepackError, QualityError, StudentRequired
from ..export.base import check_supported
from ..export.export_cache import export_cached, forget
from ..export.registry import size_target, target_bpw, target_name
from ..export.support import inspect_model
from ..liblog import say, terminal
from ..measure.calibration_text import calibration_text
from ..measure.golden import check_chat_template, golden_outputs
from ..measure.kvcache import kv_cache_effect
from ..measure.quality import EVAL_SCORED_TOKENS, cached_reference_eval, eval_text
from ..measure.quality import measure as measure_quality
from ..measure.reference import reference
from ..measure.task_scoring import score as score_tasks
from ..measure.validate import validate
from ..model.default import model_name
from ..model.facts import ModelFacts
from ..model.weight_grid import describe
from ..plan.planner import plan
from ..plan.speed_calibration import device_prediction, host_factors, host_machine, record
from ..progress import Steps
from .host_memory import check_memory
from .selection import Trial, choose, gate_message, interval_text, mixed_fallback, select
from .settings import runtime_settings
from .space import check_space
from .stage import stage

__all__ = ["build", "select"]


@dataclass
class BuildResult:
    path: str
    tarball: str
    target: str
    format: str
    precision: str
    student_layers: int | None
    check: dict
    predicted: dict
    candidates_measured: list
    budget: dict = field(default_factory=dict)  # the target's, for report.html
    device_prediction: dict | None = None
    student: str | None = None  # what kind of student the bundle holds, in words


@dataclass
class Source:
    """A model the build exports: the user's model, or a student distilled from it."""

    model_dir: Path
    facts: ModelFacts
    teacher: Path | None  # quality is measured against the teacher's when it is a student
    ref: object = None
    eval_ref: object = None
    tasks: object = None  # the --eval-tasks set (edgepack.measure.tasks)
    task_ref: object = None  # the reference's answers to it (edgepack.measure.task_scoring)
    prepared: dict = field(default_factory=dict)

    @property
    def student_layers(self) -> int | None:
        from ..compress.student_report import student_layers_from

        return student_layers_from(self.model_dir) if self.teacher else None

    @property
    def student(self) -> str | None:
        from ..compress.student_report import student_text

        return student_text(self.model_dir) if self.teacher else None


def build(
    model_dir: Path,
    facts: ModelFacts,
    profiles: list[Profile],
    out: Path,
    format_name: str | None = None,
    precision_name: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: Path | None = None,
    run_check: bool = True,
    eval_data: Path | None = None,
    eval_tokens: int = EVAL_SCORED_TOKENS,
    candidates: int = 1,
    calibration: Path | None = None,
    allow_distill: bool = False,
    distill_steps: int | None = None,
    resolve_requirements: bool = True,
    wheels: bool = False,
    eval_tasks: Path | str | None = None,
    sign_key: Path | None = None,
) -> list[BuildResult]:
    """Plan, export, validate and measure the candidates of every target; write the chosen.

    A 4-bit candidate that misses the quality floor brings in its mixed-precision variant
    (the registry's `mixed` row) before the build gives up. A target whose plan needs a
    distilled student gets one with allow_distill (distilled once, cached), and its candidates
    are measured against the teacher; without it the build stops before any work, naming the
    `edgepack distill` command that makes the student."""
    from ..cache import cache_root
    from ..compress.student_report import teacher_of

    cache = cache_dir or cache_root()
    cal_text = calibration_text(calibration)[1] if calibration else None
    tasks = _task_set(eval_tasks, profiles, facts)
    main = Source(Path(model_dir), facts, teacher_of(model_dir))
    if facts.kind == "decoder":
        check_chat_template(main.model_dir)  # input, before any work
    target = target_bpw(precision_name or "")  # a size target: the plan adds its candidate
    if target is not None:
        try:  # one the format cannot reach is refused before any work
            size_target(format_name or "gguf", target)
        except ValueError as exc:
            raise EdgepackError(str(exc)) from None
        precision_name = target_name(target)  # bpw4.8 -> bpw4.80, the candidate's own name
    plans = [plan(facts, profile, size_target=target) for profile in profiles]
    overridden = bool(format_name or precision_name)
    needing = [  # targets whose plan needs a student
        (profile, p)
        for profile, p in zip(profiles, plans, strict=True)
        if not overridden and p.chosen and p.chosen.is_student
    ]
    if needing and not allow_distill:
        profile, p = needing[0]
        raise StudentRequired(student_message(main.model_dir, profile, p.chosen))
    needs = {profile.name: p.chosen.student for profile, p in needing}
    students = {}
    for student in needs.values():
        if student not in students:
            path = distil_student(main.model_dir, student, cache, distill_steps)
            students[student] = Source(path, inspect_model(path), main.model_dir)
    todo = []
    verifier = verification_requirements() if sign_key is not None else []
    resolutions: dict = {}  # (target, runtime): what the device installs (edgepack.bundle.install)
    for profile, p in zip(profiles, plans, strict=True):
        source = main
        if profile.name in needs:
            source = students[needs[profile.name]]
            p = plan(source.facts, profile, size_target=target)
        picked, forced = select(p, format_name, precision_name, max(1, candidates))
        if resolve_requirements:  # before any export: a runtime the device cannot install
            picked = keep_installable(profile, p, picked, forced, cache, resolutions, say, verifier)
        for c in picked:
            check_supported(source.facts, c.format)
        todo.append((source, profile, p, picked, forced))
    check_space(todo, Path(out), Path(cache), cal_text)  # before anything is written
    check_memory(todo)  # and before a stage this machine could not hold
    if grid := describe(facts.weight_grid):
        say(f"note: the weights of {model_name(str(model_dir))} are {grid}")

    text_name, text = eval_text(eval_data)
    for source in [main, *students.values()]:
        if not any(s is source for s, *_ in todo):
            continue
        source.ref = reference(
            source.model_dir, source.facts, cache, trust_remote_code=trust_remote_code
        )
        if source.facts.kind == "decoder":
            judge = source.teacher or source.model_dir
            source.eval_ref = cached_reference_eval(
                judge, text_name, text, cache, trust_remote_code, eval_tokens
            )
            if tasks is not None:
                source.tasks = tasks
                source.task_ref = _task_reference(judge, tasks, cache, trust_remote_code, profiles)

    staged: list[Trial] = []
    chosen: list[tuple[Source, Profile, Trial, list[Trial]]] = []
    try:
        for source, profile, p, picked, forced in todo:
            trials = _trials(
                source,
                profile,
                p,
                picked,
                forced,
                out,
                cache,
                cal_text,
                run_check,
                staged,
                resolutions,
                wheels,
            )
            best = choose(profile, trials)
            if best is None:
                raise QualityError(gate_message(profile, p, trials))
            chosen.append((source, profile, best, trials))
        results = []
        for source, profile, best, trials in chosen:
            best.manifest["candidates_measured"] = [t.row(t is best) for t in trials]
            if best.device_prediction is not None:
                best.manifest["device_prediction"] = best.device_prediction
            if sign_key is not None:
                prepare_signed(best.staging)
            write_manifest(best.staging, best.manifest)
            if sign_key is not None:
                sign(best.staging, sign_key)  # after the manifest: model.sig covers it too
            dest = out / f"{model_name(source.model_dir)}-{profile.name}"
            path, tarball = publish(best.staging, dest)
            c = best.candidate
            results.append(
                BuildResult(
                    str(path),
                    str(tarball),
                    profile.name,
                    c.format,
                    c.precision,
                    source.student_layers,
                    best.check,
                    asdict(c.predicted),
                    best.manifest["candidates_measured"],
                    profile.budget.model_dump(mode="json"),
                    best.device_prediction,
                    source.student,
                )
            )
        write_report(out, model_name(model_dir), results)
        return results
    finally:
        for trial in staged:
            shutil.rmtree(trial.staging, ignore_errors=True)


def _trials(
    source, profile, p, picked, forced, out, cache, cal_text, run_check, staged, resolutions, wheels
) -> list[Trial]:
    """Export, validate, measure and stage the picked candidates of one target, and the
    mixed-precision variants of the 4-bit ones that miss the floor. Every staged trial is also
    added to `staged`, which build() removes at the end whatever happens."""
    trials: list[Trial] = []
    queue = list(picked)
    fallback_for: dict[tuple[str, str], str] = {}
    while queue:
        candidate = queue.pop(0)
        context = profile.budget.context_tokens
        # the runner's settings change what is measured (a KV-cache type, at this context)
        key = (candidate.format, candidate.precision, candidate.kv_cache and context)
        steps = Steps(f"{profile.name}: {candidate.label}", total=6)
        if key not in source.prepared:
            source.prepared[key] = _export_validate_measure(
                source, candidate, cache, steps, cal_text, context
            )
        else:
            steps.advance("export reused", 3)
        artifact, figures, quality = source.prepared[key]
        dest = out / f"{model_name(source.model_dir)}-{profile.name}"
        trial = stage(
            dest,
            artifact,
            dict(figures),
            quality,
            source,
            profile,
            candidate,
            forced,
            steps,
            run_check,
            resolutions.get((profile.name, candidate.runtime)),
            wheels,
            cache,
        )
        trial.fallback_for = fallback_for.get(key[:2])
        staged.append(trial)
        trials.append(trial)
        steps.close()
        tried = [t.candidate for t in trials] + queue
        fallback = mixed_fallback(p, profile, trial, tried)
        if fallback is not None:
            print(
                f"{profile.name}: {candidate.label} keeps {interval_text(quality)}, under "
                f"the floor {profile.budget.min_quality:g}; trying its mixed-precision "
                f"variant {fallback.label}",
                file=terminal(),
            )
            queue.append(fallback)
            fallback_for[(fallback.format, fallback.precision)] = candidate.label
    if source.facts.kind == "decoder":
        _predict_device(source, profile, trials, cache)
    return trials


def _predict_device(source, profile, trials, cache) -> None:
    """Each trial's device prediction, refined by what this host measured; a llama.cpp
    trial's error of the fit on this host is taken out of the other runtimes' factors
    (edgepack.plan.speed_calibration). The factors are kept for `plan --calibrated`."""
    host = host_machine()
    ok = [t for t in trials if t.check.get("verdict") not in (None, "ERROR")]
    llama = next(
        (
            f
            for t in ok
            if t.candidate.runtime == "llama.cpp"
            and (f := host_factors(source.facts, t.candidate, t.measured, host))
        ),
        None,
    )
    for t in trials:
        t.device_prediction = device_prediction(
            source.facts, profile, t.candidate, t.measured, host, llama
        )
        cal = t.device_prediction["calibration"]
        if cal and any(t is o for o in ok):
            name = f"{model_name(source.model_dir)}-{profile.name}"
            record(cache, host, cal, name)


def _task_set(eval_tasks, profiles, facts):
    """The --eval-tasks set; an error where a target's floor judges task accuracy without one,
    or where the model generates no text to answer with (an encoder)."""
    from ..measure.tasks import load_tasks

    judging = [p.name for p in profiles if p.budget.quality_metric == "tasks"]
    if (eval_tasks is not None or judging) and facts.kind != "decoder":
        raise EdgepackError(
            'task accuracy (--eval-tasks, budget.quality_metric = "tasks") measures '
            f"decoders; this model is a {facts.kind}, judged by its embeddings' cosine"
        )
    if eval_tasks is not None:
        return load_tasks(eval_tasks)
    if judging:
        raise EdgepackError(
            f'{judging[0]}\'s floor judges task accuracy (budget.quality_metric = "tasks"): '
            "pass --eval-tasks FILE.jsonl, or --eval-tasks builtin for edgepack's own set"
        )
    return None


def _task_reference(model_dir, tasks, cache, trust, profiles):
    from ..measure.task_scoring import reference_tasks

    ref = reference_tasks(model_dir, tasks, cache, trust)
    if not any(ref.correct) and any(p.budget.quality_metric == "tasks" for p in profiles):
        raise EdgepackError(
            f"the reference answers none of the {len(ref.correct)} tasks of {tasks.name} "
            "right, so task accuracy has no retention to judge; give tasks the model can do, "
            'or judge perplexity (budget.quality_metric = "perplexity")'
        )
    return ref


def _export_validate_measure(source: Source, candidate, cache, steps, cal_text, context: int):
    model_dir, facts = source.model_dir, source.facts
    steps.advance(f"exporting {candidate.format} {candidate.precision}")
    artifact = export_cached(
        model_dir, facts, candidate.format, candidate.precision, cache, steps.note, cal_text
    )
    steps.advance("validating against the reference")
    settings = runtime_settings(candidate)
    runner = load_runner(artifact.runtime, artifact.path, **settings)
    try:
        figures = validate(runner, source.ref, candidate.bits)
    except EdgepackError:
        forget(artifact)
        raise
    steps.advance("measuring quality in the runtime")
    if source.eval_ref is not None:
        quality = measure_quality(runner, source.eval_ref).to_dict()
        quality["reference_dtype"] = source.eval_ref.dtype
        if source.teacher is not None:
            quality["judged_against"] = "teacher"
    else:  # encoders: the lowest cosine similarity of sentence embeddings to the reference
        quality = {"retention": figures["embedding_cosine_min"], "metric": "embedding cosine"}
    if source.task_ref is not None:
        steps.note(f"answering {len(source.task_ref.items)} tasks in the runtime")
        quality["tasks"] = score_tasks(runner, source.task_ref, source.tasks, cache)
    figures["golden"] = golden_outputs(runner, model_dir, facts)
    del runner
    if settings.get("kv_cache") and source.eval_ref is not None:
        steps.note(f"measuring the {settings['kv_cache']} KV cache at the target's context")
        quality["kv_cache"] = kv_cache_effect(
            artifact, settings["kv_cache"], source.eval_ref.ids, context, facts.vocab_size
        )
    return artifact, figures, quality
