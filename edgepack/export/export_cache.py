"""The export cache: each (model content, format, precision) is exported once and reused.

Exports take minutes (optimum's exporters trace the model); a build for a second target, a
later build of another candidate, and the test suite reuse them. An entry is written in a
staging directory and renamed into place when complete, with its Artifact description beside it:

    <cache>/exports/<model key>/<format>-<precision>/        the artifact directory
    <cache>/exports/<model key>/<format>-<precision>.json    format, precision, runtime, details

A data-aware export (a precision that uses the calibration text, edgepack.measure.calibration_text)
is keyed by the text's digest as well, `<format>-<precision>-cal<sha256[:16]>`, so calibrated and
data-free exports, or exports calibrated on different texts, never mix; precisions that ignore
calibration keep their plain key whatever text is given.

Delete <cache>/exports to reclaim the space; nothing else refers to it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..bundle.publish import STAGING, clean_leftovers
from ..cache import content_key as model_key
from ..cache import locked, write_atomic
from ..measure import calibration_text as cal
from ..model.facts import ModelFacts
from . import isolated
from .base import Artifact, Progress, exporter
from .registry import resolve


def export_cached(
    model_dir: Path,
    facts: ModelFacts,
    format_name: str,
    precision_name: str,
    cache_dir: Path,
    progress: Progress,
    calibration: str | None = None,
) -> Artifact:
    """The cached export, or a new one. `calibration`: the calibration text (None: the
    precision's default, data-free or the built-in text; see Precision.calibration)."""
    _, precision = resolve(format_name, precision_name)
    module = exporter(format_name)
    module.check(facts, precision)
    root = Path(cache_dir) / "exports" / model_key(model_dir)
    name = entry_name(format_name, precision.name, precision.calibration, calibration)
    # a build beside this one that needs the same entry waits, then reuses it
    with locked(root / f".{name}.lock"):
        return _export_entry(
            model_dir, facts, module, precision, root, name, progress, calibration, format_name
        )


def is_cached(
    model_dir: Path, format_name: str, precision_name: str, cache_dir: Path, calibration=None
) -> bool:
    """Whether export_cached would reuse an entry (nothing to write)."""
    _, precision = resolve(format_name, precision_name)
    root = Path(cache_dir) / "exports" / model_key(model_dir)
    name = entry_name(format_name, precision.name, precision.calibration, calibration)
    return (root / name).is_dir() and (root / f"{name}.json").is_file()


def _export_entry(model_dir, facts, module, precision, root, name, progress, calibration, fmt):
    dest = root / name
    meta = root / f"{name}.json"
    if dest.is_dir() and meta.is_file():
        progress(f"reusing the cached {fmt} {precision.name} export")
        data = json.loads(meta.read_text())
        return Artifact(path=dest, **data)
    root.mkdir(parents=True, exist_ok=True)
    clean_leftovers(root)
    shutil.rmtree(dest, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-export-", dir=root))
    try:
        kwargs = {"calibration": calibration} if precision.calibration != "none" else {}
        if fmt in isolated.IN_CHILD:  # the model is loaded in a child, not in this process
            artifact = isolated.export(
                fmt, model_dir, facts, precision.name, work / "out", progress,
                calibration, with_calibration=bool(kwargs),
            )  # fmt: skip
        else:
            artifact = module.export(model_dir, facts, precision, work / "out", progress, **kwargs)
        (work / "out").rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = {
        "format": artifact.format,
        "precision": artifact.precision,
        "runtime": artifact.runtime,
        "kind": artifact.kind,
        "details": artifact.details,
    }
    write_atomic(meta, json.dumps(data, indent=2, default=str))
    return Artifact(path=dest, **data)


def entry_name(format_name: str, precision: str, mode: str, calibration: str | None) -> str:
    """The cache entry's name: the calibration text's digest is part of it when used."""
    text = cal.effective(mode, calibration)
    name = f"{format_name}-{precision}"
    return name if text is None else f"{name}-cal{cal.digest(text)[:16]}"


def forget(artifact: Artifact) -> None:
    """Drop a cached export (after it failed validation, so it is never reused as good)."""
    shutil.rmtree(artifact.path, ignore_errors=True)
    artifact.path.with_suffix(".json").unlink(missing_ok=True)
