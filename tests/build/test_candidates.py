"""A build that measures several candidates keeps the best measured one and reports them all."""

import json
from pathlib import Path

import pytest

from tests.build.conftest import QUICK_EVAL
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_candidates_are_measured_and_reported(tmp_path, generous):
    out = tmp_path / "k2"
    args = ["--target", str(generous), "--candidates", "2", *QUICK_EVAL]  # 2: quicker than 3
    result = run_cli("build", *args, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    (bundle,) = json.loads(result.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    rows = manifest["candidates_measured"]
    assert len(rows) == 2
    assert [r["chosen"] for r in rows].count(True) == 1
    chosen = next(r for r in rows if r["chosen"])
    assert (chosen["format"], chosen["precision"]) == (bundle["format"], bundle["precision"])
    for r in rows:
        assert r["measured"]["retention"] > 0.5 and r["measured"]["peak_rss_bytes"] > 0
        assert r["predicted"]["memory_bytes"] > 0
    report = (out / "report.html").read_text()
    assert "<svg" in report
    for r in rows:
        assert f"{r['format']} {r['precision']}" in report
    # only the chosen candidate became a bundle; the others' staging directories are gone
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [Path(bundle["path"]).name, Path(bundle["tarball"]).name, "report.html"]
    )
