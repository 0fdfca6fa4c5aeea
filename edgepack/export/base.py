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

    def weights_bytes(self) -> int:
        """The bytes of the model's weight files (what "smaller than fp32" compares)."""
        return sum(p.stat().st_size for p in self.files() if is_weight_file(p.name))


# the files that hold a model's weights and graph in each format; the tokenizer's own IRs and
# tables are not the model's
WEIGHT_SUFFIXES = (".gguf", ".bin", ".xml", ".onnx", ".data", ".onnx_data")


def is_weight_file(name: str) -> bool:
    name = Path(name).name
    return name.endswith(WEIGHT_SUFFIXES) and "tokenizer" not in name


def size_figures(weights_bytes: int, parameters: int) -> dict:
    """Bits per weight and the share saved against the same parameters stored in fp32."""
    parameters = max(parameters, 1)
    return {
        "weights_bytes": weights_bytes,
        "bits_per_weight": round(8 * weights_bytes / parameters, 3),
        "smaller_than_fp32": round(1 - weights_bytes / (4 * parameters), 4),
    }


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
