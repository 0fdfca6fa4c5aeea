"""Export formats: the registry table (data) and, per format, its exporter module."""

from .registry import FORMATS, RUNTIMES, Format, Precision, Runtime, resolve

__all__ = ["FORMATS", "RUNTIMES", "Format", "Precision", "Runtime", "resolve"]
