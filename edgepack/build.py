"""`edgepack build`: plan, export, validate, write one bundle per target, check it on this host.

Flow per target: plan(facts, profile) -> the chosen candidate (or the --format/--precision
override) -> export (shared between targets that chose the same variant) -> validation against
the PyTorch fp32 reference (fatal) -> golden outputs -> bundle in a staging directory -> the
bundle's own check.py in a subprocess on this host -> recorded in the manifest -> atomic rename
and tarball.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .bundle import kit_files, publish, staging_dir, write_manifest
from .calibration import calibration_text
from .errors import EdgepackError, PlanError, QualityError, StudentRequired
from .exports import export_cached, forget
from .formats.base import check_supported
from .formats.registry import FORMATS, RUNTIMES, resolve
from .kit import check_module, kit_dir, load_runner
from .model import ModelFacts, inspect_model
from .planner import GB, QUALITY_TIE, Candidate, Plan, plan
from .profiles import Profile
from .progress import Steps
from .quality import cached_reference_eval, eval_text
from .quality import measure as measure_quality
from .reference import reference
from .report import write_report
from .validate import validate

SCHEMA_VERSION = 1
GOLDEN_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
)
GOLDEN_TOKENS = 32
RUNTIME_REQUIREMENTS = {
    "llama.cpp": ["llama-cpp-python", "numpy"],
    "openvino": ["openvino", "openvino-tokenizers", "openvino-genai", "tokenizers", "numpy"],
    "onnxruntime": ["onnxruntime", "tokenizers", "numpy"],
}


RUNTIME_NOTES = {
    "openvino": """
The runner compiles the model with `INFERENCE_PRECISION_HINT=f32`: on CPUs with bf16 the
CPU plugin's default bf16 execution moves this model's logits enough to change answers. Pass
the same setting when you load `model/` yourself (`ov_config={"INFERENCE_PRECISION_HINT":
"f32"}` for optimum-intel, or as a property of `openvino_genai.LLMPipeline`).
""",
}


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


def select(
    p: Plan, format_name: str | None, precision_name: str | None, k: int = 1
) -> tuple[list[Candidate], bool]:
    """The candidates to build and measure: the plan's best k undistilled ones, or the best
    match of an override. build() turns a plan that needs a student into a student first, so
    a plan with no undistilled candidate here is a student's that needs a smaller one."""
    if not format_name and not precision_name:
        if p.chosen is None:
            raise PlanError(p.needs["message"], plan=p)
        ranked = [c for c in p.candidates if c.feasible and not c.student_layers]
        if not ranked:
            raise PlanError(
                f"the distilled student does not fit {p.target}: its plan needs a "
                f"{p.chosen.student_layers}-layer student of it; relax the target's budgets",
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
        if c.student_layers is not None or (format_name and c.format != format_name):
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


@dataclass
class Trial:
    """One candidate for one target: staged as a bundle, measured on this host."""

    candidate: Candidate
    quality: dict
    staging: Path
    manifest: dict
    check: dict
    reasons: list[str]
    fallback_for: str | None = None  # the 4-bit candidate whose miss brought this one in

    @property
    def measured(self) -> dict:
        return self.check.get("measured") or {}

    def row(self, chosen: bool) -> dict:
        m, c = self.measured, self.candidate
        return {
            "format": c.format,
            "precision": c.precision,
            "bits": c.bits,
            "student_layers": c.student_layers,
            "runtime": c.runtime,
            "chosen": chosen,
            "fallback_for": self.fallback_for,
            "accepted": not self.reasons,
            "reasons": self.reasons,
            "predicted": {
                "memory_bytes": c.predicted.memory_bytes,
                "disk_bytes": c.predicted.disk_bytes,
                "decode_tokens_per_s": c.predicted.decode_tokens_per_s,
                "first_token_ms": c.predicted.first_token_ms,
                "quality": c.predicted.quality,
            },
            "measured": {
                "retention": self.quality.get("retention"),
                "perplexity": self.quality.get("perplexity"),
                "kl_divergence_mean": self.quality.get("kl_divergence_mean"),
                "disk_bytes": sum(f["bytes"] for f in self.manifest["files"]),
                "peak_rss_bytes": m.get("peak_rss_bytes"),
                "decode_tokens_per_s": m.get("decode_tokens_per_s_p50"),
                "first_token_ms": m.get("first_token_ms_p50"),
            },
        }


@dataclass
class Source:
    """A model the build exports: the user's model, or a student distilled from it."""

    model_dir: Path
    facts: ModelFacts
    teacher: Path | None  # quality is measured against the teacher's when it is a student
    ref: object = None
    eval_ref: object = None
    prepared: dict = field(default_factory=dict)

    @property
    def student_layers(self) -> int | None:
        from .distill import student_layers_from

        return student_layers_from(self.model_dir) if self.teacher else None


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
    candidates: int = 1,
    calibration: Path | None = None,
    allow_distill: bool = False,
    distill_steps: int | None = None,
) -> list[BuildResult]:
    """Plan, export, validate and measure the candidates of every target; write the chosen.

    A 4-bit candidate that misses the quality floor brings in its mixed-precision variant
    (the registry's `mixed` row) before the build gives up. A target whose plan needs a
    distilled student gets one with allow_distill (distilled once, cached), and its candidates
    are measured against the teacher; without it the build stops before any work, naming the
    `edgepack distill` command that makes the student."""
    from .demo import cache_root
    from .distill import teacher_of

    cache = cache_dir or cache_root()
    cal_text = calibration_text(calibration)[1] if calibration else None
    main = Source(Path(model_dir), facts, teacher_of(model_dir))
    plans = [plan(facts, profile) for profile in profiles]
    overridden = bool(format_name or precision_name)
    needing = [  # targets whose plan needs a student
        (profile, p)
        for profile, p in zip(profiles, plans, strict=True)
        if not overridden and p.chosen and p.chosen.student_layers
    ]
    if needing and not allow_distill:
        profile, p = needing[0]
        raise StudentRequired(_student_message(main.model_dir, profile, p.chosen))
    needs = {profile.name: p.chosen.student_layers for profile, p in needing}
    students = {}
    for layers in needs.values():
        if layers not in students:
            path = distil_student(main.model_dir, layers, cache, distill_steps)
            students[layers] = Source(path, inspect_model(path), main.model_dir)
    todo = []
    for profile, p in zip(profiles, plans, strict=True):
        source = main
        if profile.name in needs:
            source = students[needs[profile.name]]
            p = plan(source.facts, profile)
        picked, forced = select(p, format_name, precision_name, max(1, candidates))
        for c in picked:
            check_supported(source.facts, c.format)
        todo.append((source, profile, p, picked, forced))

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
                judge, text_name, text, cache, trust_remote_code
            )

    staged: list[Trial] = []
    chosen: list[tuple[Source, Profile, Trial, list[Trial]]] = []
    try:
        for source, profile, p, picked, forced in todo:
            trials = _trials(
                source, profile, p, picked, forced, out, cache, cal_text, run_check, staged
            )
            best = _choose(profile, trials)
            if best is None:
                raise QualityError(_gate_message(profile, p, trials))
            chosen.append((source, profile, best, trials))
        results = []
        for source, profile, best, trials in chosen:
            best.manifest["candidates_measured"] = [t.row(t is best) for t in trials]
            write_manifest(best.staging, best.manifest)
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
                )
            )
        write_report(out, model_name(model_dir), results)
        return results
    finally:
        for trial in staged:
            shutil.rmtree(trial.staging, ignore_errors=True)


def _trials(
    source, profile, p, picked, forced, out, cache, cal_text, run_check, staged: list[Trial]
) -> list[Trial]:
    """Export, validate, measure and stage the picked candidates of one target, and the
    mixed-precision variants of the 4-bit ones that miss the floor. Every staged trial is also
    added to `staged`, which build() removes at the end whatever happens."""
    trials: list[Trial] = []
    queue = list(picked)
    fallback_for: dict[tuple[str, str], str] = {}
    while queue:
        candidate = queue.pop(0)
        key = (candidate.format, candidate.precision)
        steps = Steps(f"{profile.name}: {candidate.label}", total=6)
        if key not in source.prepared:
            source.prepared[key] = _export_validate_measure(
                source, candidate, cache, steps, cal_text
            )
        else:
            steps.advance("export reused", 3)
        artifact, figures, quality = source.prepared[key]
        dest = out / f"{model_name(source.model_dir)}-{profile.name}"
        trial = _stage(
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
        )
        trial.fallback_for = fallback_for.get(key)
        staged.append(trial)
        trials.append(trial)
        steps.close()
        tried = [t.candidate for t in trials] + queue
        fallback = _mixed_fallback(p, profile, trial, tried)
        if fallback is not None:
            print(
                f"{profile.name}: {candidate.label} keeps {quality['retention']:.4f} < "
                f"floor {profile.budget.min_quality:g}; trying its mixed-precision "
                f"variant {fallback.label}",
                file=sys.stderr,
            )
            queue.append(fallback)
            fallback_for[(fallback.format, fallback.precision)] = candidate.label
    return trials


def student_dir(model_dir: Path, layers: int, cache: Path, steps: int) -> Path:
    """Where the cached student of `layers` layers distilled for `steps` steps lives."""
    from .reference import model_key

    return (
        cache
        / "students"
        / f"{model_key(model_dir)}-s{steps}"
        / (f"{model_name(model_dir)}-{layers}L")
    )


def distil_student(model_dir: Path, layers: int, cache: Path, steps: int | None) -> Path:
    """The distilled student of `layers` layers: from the cache, or distilled now (atomically:
    a killed distillation leaves nothing that looks finished)."""
    import tempfile

    from .distill import DEFAULT_STEPS, REPORT_FILE, distill

    steps = steps or DEFAULT_STEPS
    dest = student_dir(model_dir, layers, cache, steps)
    if (dest / REPORT_FILE).is_file():
        print(f"reusing the distilled {layers}-layer student in {dest}", file=sys.stderr)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".distilling-{layers}L-", dir=dest.parent))
    try:
        distill(model_dir, work / "student", layers, steps=steps)
        shutil.rmtree(dest, ignore_errors=True)
        (work / "student").rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _student_message(model_dir: Path, profile: Profile, c: Candidate) -> str:
    from .distill import command_line

    out = Path("students") / f"{model_name(model_dir)}-{c.student_layers}L"
    return (
        f"{profile.name} needs a distilled {c.student_layers}-layer student ({c.label}); "
        f"make it with `{command_line(model_dir, c.student_layers, out)}` and build it with "
        f"--model {out}, or pass --allow-distill to distil it now (it takes a while), or "
        "relax the target's budgets (see `edgepack plan`)"
    )


def _mixed_fallback(
    p: Plan, profile: Profile, trial: Trial, tried: list[Candidate]
) -> Candidate | None:
    """The mixed-precision variant of a 4-bit candidate that missed the floor, if not tried."""
    c = trial.candidate
    if c.bits != 4 or trial.quality["retention"] >= profile.budget.min_quality:
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
            and m.student_layers == c.student_layers
            and m.device == c.device
            and not set(m.violations) - {"quality"}
        ),
        None,
    )


def _choose(profile: Profile, trials: list[Trial]) -> Trial | None:
    """The best measured candidate by the profile's objective, among those meeting the floor,
    the memory budget (measured peak on this host; not for GPU candidates) and the disk budget."""
    budget = profile.budget
    for t in trials:
        m = t.measured
        retention = t.quality["retention"]
        if retention < budget.min_quality:
            t.reasons.append(f"measured retention {retention:.4f} < floor {budget.min_quality:g}")
        peak = m.get("peak_rss_bytes")
        if t.candidate.device == "cpu" and peak and peak > budget.memory_gb * GB:
            t.reasons.append(f"measured peak memory {peak / GB:.2f} GB > {budget.memory_gb:g} GB")
        disk = sum(f["bytes"] for f in t.manifest["files"])
        if disk > budget.disk_gb * GB:
            t.reasons.append(f"bundle {disk / GB:.2f} GB > disk budget {budget.disk_gb:g} GB")
    accepted = [t for t in trials if not t.reasons]
    if not accepted:
        return None

    def key(t: Trial):
        quality = round(t.quality["retention"] / QUALITY_TIE)
        speed = t.measured.get("decode_tokens_per_s_p50") or (
            t.candidate.predicted.decode_tokens_per_s or 0.0
        )
        size = sum(f["bytes"] for f in t.manifest["files"])
        if profile.objective == "speed":
            return (-speed, -quality, size)
        if profile.objective == "size":
            return (size, -quality, -speed)
        return (-quality, -speed, size)

    return min(accepted, key=key)


def _gate_message(profile: Profile, p: Plan, trials: list[Trial]) -> str:
    """Why no candidate was accepted, the mixed-precision variants tried, and the next
    candidate worth trying."""
    firsts = [t for t in trials if t.fallback_for is None]
    best = max(firsts, key=lambda t: t.quality["retention"])
    candidate, quality = best.candidate, best.quality
    tried = {(t.candidate.format, t.candidate.precision) for t in trials}
    predicted = max(t.candidate.predicted.quality for t in trials)
    better = [
        c
        for c in p.candidates
        if c.student_layers == candidate.student_layers
        and (c.format, c.precision) not in tried
        and c.predicted.quality > predicted
        and not set(c.violations) - {"quality"}
    ]
    hint = "no other candidate of this plan is predicted to keep more"
    if better:
        nxt = min(better, key=lambda c: (not c.feasible, c.bits, -c.predicted.quality))
        hint = f"next worth trying: --format {nxt.format} --precision {nxt.precision}"
    measured = f"retention {quality['retention']:.4f}"
    if "perplexity" in quality:
        measured += (
            f" (perplexity {quality['perplexity']:.2f} vs the reference's "
            f"{quality['reference_perplexity']:.2f})"
        )
    others = f" ({len(firsts)} candidates measured)" if len(firsts) > 1 else ""
    why = "; ".join(best.reasons)
    mixed = [t for t in trials if t.fallback_for is not None]
    if mixed:
        kept = ", ".join(f"{t.candidate.label} {t.quality['retention']:.4f}" for t in mixed)
        why += f"; the mixed-precision variants tried keep {kept}"
    return (
        f"{candidate.label} keeps {measured}{others}: {why}; nothing fits {profile.name}'s "
        f"floor {profile.budget.min_quality:g}, no bundle written; {hint}"
    )


def _export_validate_measure(source: Source, candidate, cache, steps, cal_text):
    model_dir, facts = source.model_dir, source.facts
    steps.advance(f"exporting {candidate.format} {candidate.precision}")
    artifact = export_cached(
        model_dir, facts, candidate.format, candidate.precision, cache, steps.note, cal_text
    )
    steps.advance("validating against the fp32 reference")
    runner = load_runner(artifact.runtime, artifact.path)
    try:
        figures = validate(runner, source.ref, candidate.bits)
    except EdgepackError:
        forget(artifact)
        raise
    steps.advance("measuring quality in the runtime")
    if source.eval_ref is not None:
        quality = measure_quality(runner, source.eval_ref).to_dict()
        if source.teacher is not None:
            quality["judged_against"] = "teacher"
    else:  # encoders: the lowest cosine similarity of sentence embeddings to the reference
        quality = {"retention": figures["embedding_cosine_min"], "metric": "embedding cosine"}
    figures["golden"] = _golden(runner, model_dir, facts)
    del runner
    return artifact, figures, quality


def model_name(model_dir: Path) -> str:
    """The model's name for bundle names: its directory, or the default model's own name."""
    from .demo import MODEL_NAME, cache_root

    model_dir = Path(model_dir)
    if model_dir.parent == cache_root() / "models" and model_dir.name.startswith(MODEL_NAME):
        return MODEL_NAME
    return model_dir.name


def chat_prompt(model_dir: Path, question: str) -> str:
    """The question in the model's own chat template, or as plain text when it has none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tok, "chat_template", None):
        return question
    messages = [{"role": "user", "content": question}]
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _golden(runner, model_dir: Path, facts: ModelFacts) -> list[dict]:
    if facts.kind == "encoder":
        return [
            {"name": s, "prompt": s, "embedding": runner.embed([s])[0].round(6).tolist()}
            for s in GOLDEN_PROMPTS
        ]
    golden = []
    for question in GOLDEN_PROMPTS:
        prompt = chat_prompt(model_dir, question)
        ids = runner.tokenize(prompt)
        tokens = runner.generate(ids, GOLDEN_TOKENS, stop_at_eos=True).tokens
        golden.append(
            {
                "name": question,
                "prompt": prompt,
                "prompt_ids": ids,
                "tokens": tokens,
                "text": runner.detokenize(tokens),
            }
        )
    return golden


def _stage(
    dest, artifact, figures, quality, source, profile, candidate, forced, steps, run_check
) -> Trial:
    """The bundle of one candidate in a staging directory, checked on this host."""
    model_dir, facts = source.model_dir, source.facts
    steps.advance("writing the bundle")
    staging = staging_dir(dest)
    try:
        shutil.copytree(artifact.path, staging / "model")
        for name in kit_files(artifact.runtime):
            shutil.copy2(kit_dir() / name, staging / name)
        runtime = RUNTIMES[artifact.runtime]
        requirements = _requirements(artifact.runtime)
        (staging / "requirements.txt").write_text("\n".join(requirements) + "\n")
        golden = figures.pop("golden")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgepack_version": __version__,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "source_model": _source(model_dir, facts),
            "target": profile.to_dict(),
            "plan": asdict(candidate),
            "forced_by_user": forced,
            "artifact": {
                "format": artifact.format,
                "precision": artifact.precision,
                "details": artifact.details,
            },
            "runtime": {
                "name": artifact.runtime,
                "package": runtime.package,
                "requirements": requirements,
            },
            "predicted": asdict(candidate.predicted),
            "validation": figures,
            "quality": quality,
            "golden": golden,
            "build_host": None,
        }
        if source.teacher is not None:
            manifest["distillation"] = _distillation(source)
        (staging / "README.md").write_text(_readme(manifest))
        manifest = write_manifest(staging, manifest)
        check = {}
        if run_check:
            steps.advance("running the bundle's check.py on this host")
            check = run_bundle_check(staging)
            manifest["build_host"] = {"host": check.get("host"), "check": check}
            manifest = write_manifest(staging, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Trial(candidate, quality, staging, manifest, check, [])


def _distillation(source: Source) -> dict:
    """What the manifest says about a distilled student: its teacher and how it was made."""
    from .distill import read_report

    report = read_report(source.model_dir) or {}
    return {
        "teacher": str(source.teacher),
        "student_layers": source.student_layers,
        "report": {k: report.get(k) for k in ("teacher", "student", "training", "evaluation")},
    }


def run_bundle_check(bundle: Path, extra: list[str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, str(bundle / "check.py"), "--json", *(extra or [])],
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"pass": False, "verdict": "ERROR", "error": f"check.py crashed: {tail}"}
    report["exit_code"] = proc.returncode
    return report


def _requirements(runtime: str) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in RUNTIME_REQUIREMENTS[runtime]:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def _source(model_dir: Path, facts: ModelFacts) -> dict:
    digest = hashlib.sha256()
    weights = sorted(p for p in Path(model_dir).glob("*.safetensors"))
    sha = check_module().sha256_file
    for path in weights:
        digest.update(f"{path.name}:{sha(path)}\n".encode())
    return {
        "path": str(model_dir),
        "architecture": facts.architecture,
        "num_parameters": facts.num_parameters,
        "weights_sha256": digest.hexdigest(),
        "weight_files": [p.name for p in weights],
    }


def _readme(manifest: dict) -> str:
    plan, target, runtime = manifest["plan"], manifest["target"], manifest["runtime"]
    student = f", {plan['student_layers']}-layer student" if plan["student_layers"] else ""
    return f"""# {model_name(manifest["source_model"]["path"])} for {target["name"]}

{manifest["artifact"]["format"]} {manifest["artifact"]["precision"]}{student}, run by
{runtime["name"]}. Built by edgepack {manifest["edgepack_version"]} on {manifest["created"]}.

Target: {target["description"]}.

## On the device

```sh
python3 -m venv venv && venv/bin/pip install -r requirements.txt
venv/bin/python check.py            # PASS (exit 0), FAIL (exit 1) or ERROR (exit 2)
venv/bin/python check.py --json     # the same report as JSON
```

`check.py` verifies every file against `manifest.json` before loading anything, reproduces
the golden outputs, then measures peak memory, load time, first-token latency for a 128-token
prompt and decode speed, and compares them with the budgets of `manifest.json` (or of
`--profile FILE`). Options: `--threads N`, `--repetitions N`.

The model files are in `model/`; the runner for {runtime["name"]}
(`{kit_files(runtime["name"])[-1]}`) shows how to load and run them.
{RUNTIME_NOTES.get(runtime["name"], "")}"""
