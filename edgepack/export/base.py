"""The one small interface every format module implements, and the artifact it returns."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import UnsupportedModelError
from ..model.facts import ModelFacts
from .registry import FORMATS, Precision

Progress = Callable[[str], None]  # called with a short description of each step


@dataclass(frozen=True)
class Artifact:
    """An exported model directory, ready for its runtime (and later for a bundle's model/)."""

    format: str
    precision: str
    runtime: str
    path: Path
    kind: str  # "decoder" or "encoder"
    details: dict = field(default_factory=dict)  # tool versions, group size, fallbacks, ...

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file())

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())


class Exporter(Protocol):
    """A format module: `edgepack.export.<name>` exposes these two functions."""

    def check(self, facts: ModelFacts, precision: Precision) -> None:
        """Raise UnsupportedModelError before any work when this export cannot succeed."""

    def export(
        self,
        model_dir: Path,
        facts: ModelFacts,
        precision: Precision,
        out: Path,
        progress: Progress,
        *,
        calibration: str | None = None,
    ) -> Artifact:
        """Export (and quantize) model_dir into the empty directory `out`; `calibration` is
        the calibration text for a data-aware precision (edgepack.measure.calibration_text), else
        None."""


def exporter(format_name: str) -> Exporter:
    """The format module, imported only when an export needs it (its backends are heavy)."""
    return importlib.import_module(f"edgepack.export.{format_name.replace('-', '_')}")


def check_supported(facts: ModelFacts, format_name: str) -> None:
    """Refuse a format the exporter or edgepack's kit does not support (edgepack.export.support)."""
    if format_name not in facts.formats or facts.model_type not in FORMATS[format_name].model_types:
        why = dict(facts.unsupported).get(format_name, "edgepack's kit is not tested with it")
        raise UnsupportedModelError(
            f"format {format_name} cannot export {facts.architecture} (model_type "
            f"{facts.model_type}): {why}; formats that can: {', '.join(facts.formats) or 'none'}"
        )
