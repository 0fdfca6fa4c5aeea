"""One candidate's bundle: written into a staging directory, then checked on this host.

The manifest is edgepack.bundle.manifest's typed Manifest (every key defined once, in the kit). It
names the path the bundle is published to, never the staging directory, and says why there is
no host measurement when the check was skipped.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..bundle.install import download
from ..bundle.kit import check_module, gpu_module, kit_dir
from ..bundle.manifest import Manifest
from ..bundle.publish import kit_files, staging_dir, write_manifest
from ..bundle.run_check import run_bundle_check
from ..cache import cache_root
from ..export.registry import RUNTIMES
from ..liblog import say
from ..model.default import model_name
from ..model.facts import ModelFacts
from .selection import Trial
from .settings import runtime_settings

RUNTIME_REQUIREMENTS = {
    "llama.cpp": ["llama-cpp-python", "numpy"],
    "openvino": ["openvino", "openvino-tokenizers", "openvino-genai", "tokenizers", "numpy"],
    "onnxruntime": ["onnxruntime", "tokenizers", "numpy"],
    "onnxruntime-genai": ["onnxruntime-genai", "onnxruntime", "tokenizers", "numpy"],
}
RUNTIME_NOTES = {
    "openvino": """
The runner compiles the model with `INFERENCE_PRECISION_HINT=f32`: on CPUs with bf16 the
CPU plugin's default bf16 execution moves this model's logits enough to change answers. Pass
the same setting when you load `model/` yourself (`ov_config={"INFERENCE_PRECISION_HINT":
"f32"}` for optimum-intel, or as a property of `openvino_genai.LLMPipeline`).
""",
}
GPU_NOTE = """
## On the GPU

This bundle is planned for the target's {accelerator}. `check.py` is an ERROR (exit 2) where
{runtime} runs it on the CPU, and on the GPU it judges the VRAM the model holds against
`budget.accelerator_memory_gb`. Install the runtime's GPU build before the check:

```sh
{build}
```

`check.py --allow-cpu` runs it on a CPU all the same, as a smoke test (the build host's own
check does so where it has no GPU); those figures are not the GPU's.
"""
WHEELHOUSE = "wheelhouse"
NO_CHECK = "--no-check was given: this host did not run the bundle's check"


def stage(
    dest: Path,
    artifact,
    figures,
    quality,
    source,
    profile,
    candidate,
    forced,
    steps,
    run_check,
    resolution=None,
    wheels: bool = False,
    cache: Path | None = None,
) -> Trial:
    """The bundle of one candidate in a staging directory, checked on this host.

    resolution: what the device installs (edgepack.bundle.install), or None where the build did not
    resolve it (--no-resolve): requirements.txt then pins this host's versions. wheels: the
    target's wheels go into wheelhouse/ (a source-only runtime cross-compiled for a CPU of
    another arch, cached in `cache`), and requirements.txt carries their hashes."""
    model_dir, facts = source.model_dir, source.facts
    metric = profile.budget.quality_metric
    if "retention" in quality and "metric" not in quality:  # a decoder's: say what is judged
        quality = {**quality, "gated_on": metric}
    steps.advance("writing the bundle")
    staging = staging_dir(dest)
    try:
        shutil.copytree(artifact.path, staging / "model")
        for name in kit_files(artifact.runtime):
            shutil.copy2(kit_dir() / name, staging / name)
        runtime = RUNTIMES[artifact.runtime]
        requirements = resolution.lines() if resolution else _requirements(artifact.runtime)
        if wheels and resolution is not None:  # --wheels needs the resolution (cli/build.py)
            steps.note("downloading the target's wheels")
            requirements, resolution = download(
                resolution, profile, staging / WHEELHOUSE, cache or cache_root(), say
            )
        (staging / "requirements.txt").write_text("\n".join(requirements) + "\n")
        golden = figures.pop("golden")
        manifest = Manifest(
            edgepack_version=__version__,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            bundle={"name": dest.name, "path": str(dest.resolve())},
            source_model=_source(model_dir, facts),
            target=profile.to_dict(),
            plan=asdict(candidate),
            forced_by_user=forced,
            artifact={
                "format": artifact.format,
                "precision": artifact.precision,
                "details": artifact.details,
            },
            runtime={
                "name": artifact.runtime,
                "package": runtime.package,
                "requirements": requirements,
                "settings": runtime_settings(candidate),
                "install": {**resolution.to_dict(), "wheelhouse": wheels}
                if resolution
                else {"resolved": False},
            },
            predicted=asdict(candidate.predicted),
            validation=figures,
            quality=quality,
            golden=golden,
            build_host={"skipped": NO_CHECK},
            distillation=_distillation(source) if source.teacher is not None else None,
        )
        (staging / "README.md").write_text(_readme(manifest.to_dict()))
        data = write_manifest(staging, manifest.to_dict())
        check = {}
        if run_check:
            steps.advance("running the bundle's check.py on this host")
            # a build host without the target's GPU runs a GPU bundle's check on its CPU
            extra = ["--allow-cpu"] if candidate.device == "gpu" else []
            check = run_bundle_check(staging, extra)
            check["bundle"] = str(dest.resolve())  # where it is published, not the staging dir
            data["build_host"] = {"host": check.get("host"), "check": check}
            data = write_manifest(staging, data)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Trial(candidate, quality, staging, data, check, metric=metric)


def _distillation(source) -> dict:
    """What the manifest says about a distilled student: its teacher and how it was made."""
    from ..compress.student_report import read_report

    report = read_report(source.model_dir) or {}
    return {
        "teacher": str(source.teacher),
        "student_layers": source.student_layers,
        "student": source.student,
        "report": {k: report.get(k) for k in ("teacher", "student", "training", "evaluation")},
    }


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
        "weight_grid": {str(bits): share for bits, share in facts.weight_grid},
        "weights_sha256": digest.hexdigest(),
        "weight_files": [p.name for p in weights],
    }


def _readme(manifest: dict) -> str:
    plan, target, runtime = manifest["plan"], manifest["target"], manifest["runtime"]
    made = (manifest.get("distillation") or {}).get("student")
    student = f", a {made} of {model_name(manifest['distillation']['teacher'])}" if made else ""
    if plan.get("cpu_moe_layers"):
        student += f", experts of {plan['cpu_moe_layers']} layers in host RAM"
    settings = ", ".join(f"{k} {v}" for k, v in (runtime.get("settings") or {}).items())
    if settings:
        settings = f"\nThe runner's settings (manifest.json runtime.settings): {settings}.\n"
    return f"""# {model_name(manifest["source_model"]["path"])} for {target["name"]}

{manifest["artifact"]["format"]} {manifest["artifact"]["precision"]}{student}, run by
{runtime["name"]}. Built by edgepack {manifest["edgepack_version"]} on {manifest["created"]}.

Target: {target["description"]}.

## On the device

```sh
python3 -m venv venv && venv/bin/pip install {_pip_options(runtime)}-r requirements.txt
{_source_builds(runtime)}venv/bin/python check.py            # PASS (exit 0), FAIL (1), ERROR (2)
venv/bin/python check.py --json     # the same report as JSON
```

{_installs(runtime)}`check.py` verifies every file against `manifest.json` before loading anything,
reproduces the golden outputs, then measures peak memory, load time, first-token latency for a
128-token prompt and decode speed, and compares them with the budgets of `manifest.json` (or of
`--profile FILE`). Options: `--threads N`, `--repetitions N`.

The model files are in `model/`; the runner for {runtime["name"]}
(`{kit_files(runtime["name"])[-1]}`) shows how to load and run them.
{settings}{RUNTIME_NOTES.get(runtime["name"], "")}{_gpu_note(plan, target, runtime)}"""


def _pip_options(runtime: dict) -> str:
    """pip's options for an offline device: the bundle's wheelhouse and nothing else."""
    if (runtime.get("install") or {}).get("wheelhouse"):
        return f"--no-index --find-links {WHEELHOUSE} --require-hashes "
    return ""


def _source_builds(runtime: dict) -> str:
    lines = []
    offline = _pip_options(runtime).replace("--require-hashes ", "")
    for b in (runtime.get("install") or {}).get("source_builds", []):
        lines.append(
            f'CMAKE_ARGS="{b["cmake_args"]}" venv/bin/pip install {offline}--no-deps '
            f"{b['name']}=={b['version']}   # compiled on the device"
        )
    return "".join(f"{line}\n" for line in lines)


def _installs(runtime: dict) -> str:
    install = runtime.get("install") or {}
    if not install.get("platform"):
        return (
            "requirements.txt pins the build host's versions: they were not resolved for the "
            "target (--no-resolve).\n\n"
        )
    text = (
        f"requirements.txt was resolved at build time for the target ({install['platform']}): "
        "every package has a wheel for it."
    )
    if install.get("wheelhouse"):
        text += (
            f" Those wheels are in {WHEELHOUSE}/, each hashed in manifest.json and in "
            "requirements.txt: the device installs them without the internet."
        )
    for b in install.get("prebuilt", []):
        text += (
            f" {b['name']} publishes no wheel for the target: {b['wheel']} in {WHEELHOUSE}/ was "
            f"compiled for it at build time ({b['built_with']}, CMAKE_ARGS "
            f'"{b["cmake_args"]}"), so the device needs no compiler.'
        )
    for b in install.get("source_builds", []):
        text += (
            f" {b['name']} publishes no wheels: pip compiles it on the device (a C++ compiler "
            "and a few minutes; cmake comes from pip where the device has none), with the "
            "CMAKE_ARGS above for the target's "
            + ("GPU (and the CUDA toolkit)." if "CUDA" in b["cmake_args"] else "CPU.")
        )
    return _wrap(text) + "\n\n"


def _wrap(text: str) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, 92))


def _gpu_note(plan: dict, target: dict, runtime: dict) -> str:
    if plan.get("device") != "gpu":
        return ""
    accelerator = (target.get("accelerator") or {}).get("name") or "GPU"
    build = gpu_module().GPU_BUILDS.get(runtime["name"], "a GPU build of the runtime")
    return GPU_NOTE.format(accelerator=accelerator, runtime=runtime["name"], build=build)
