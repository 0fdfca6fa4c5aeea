"""Every row of the format registry has its end-to-end test on the real default model."""

import importlib

import pytest

from edgepack.export.registry import FORMATS
from edgepack.model.config import ENCODERS


def _parametrized(fn, name):
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == name:
            return {v if isinstance(v, str) else v.values[0] for v in mark.args[1]}
    return set()


@pytest.mark.parametrize("format_name", list(FORMATS))
def test_every_registry_row_has_an_end_to_end_test(format_name):
    module = importlib.import_module(f"tests.export.test_{format_name.replace('-', '_')}")
    e2e = getattr(module, "test_decoder_export_validates", None)
    assert e2e is not None, f"tests/export/test_{format_name}.py has no end-to-end test"
    assert any(m.name == "integration" for m in getattr(e2e, "pytestmark", []))
    tested = _parametrized(e2e, "precision")
    rows = {p.name for p in FORMATS[format_name].precisions}
    assert rows <= tested, f"{format_name}: no end-to-end test for {sorted(rows - tested)}"
    if FORMATS[format_name].model_types & ENCODERS:
        encoder = getattr(module, "test_encoder_export_validates", None)
        assert encoder is not None and _parametrized(encoder, "precision")


def test_every_format_module_implements_the_interface():
    from edgepack.export.base import exporter

    for name in FORMATS:
        module = exporter(name)
        assert callable(module.check) and callable(module.export), name
