"""Targets whose plan needs a distilled student: build stops naming the command, or distils."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import PROFILES, run_cli

pytestmark = pytest.mark.integration


def tight_profile(tmp_path, floor: float) -> Path:
    """edge-4gb with a memory budget no more than a 23-layer student of the default model meets
    (with the q8_0 KV cache),
    ranked by quality (the largest student that fits), whatever the floor."""
    text = (PROFILES / "edge-4gb.toml").read_text().replace('name = "edge-4gb"', 'name = "tiny"')
    text = re.sub(r"^memory_gb = [^#\n]*", "memory_gb = 0.2 ", text, flags=re.M)
    text = re.sub(r'^objective = "[a-z]*"', 'objective = "quality"', text, flags=re.M)
    text = re.sub(r"^min_quality = [^#\n]*", f"min_quality = {floor} ", text, flags=re.M)
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def test_plan_needing_a_student_stops_with_the_distill_command(tmp_path):
    out = tmp_path / "out"
    result = run_cli("build", "--target", str(tight_profile(tmp_path, 0.85)), "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert "tiny needs a distilled 23-layer student" in line
    command = "edgepack distill --layers 23 --out students/SmolLM2-135M-Instruct-23L"
    assert f"`{command}`" in line and "--allow-distill" in line
    assert not out.exists()


def test_allow_distill_builds_the_student_judged_against_the_teacher(tmp_path):
    # two steps do not make a student (its perplexity on WikiText-2 is thousands of times the
    # teacher's): the floor is all but zero, the figures are what matter
    out = tmp_path / "out"
    result = run_cli(
        "build",
        "--target",
        str(tight_profile(tmp_path, 1e-6)),
        "--eval-tokens",
        "512",
        "--allow-distill",
        "--distill-steps",
        "2",
        "--candidates",
        "1",
        "--no-check",
        "--out",
        str(out),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (bundle,) = json.loads(result.stdout)["bundles"]
    assert bundle["student_layers"] == 23
    assert Path(bundle["path"]).name == "SmolLM2-135M-Instruct-23L-tiny"
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    assert manifest["distillation"]["student_layers"] == 23
    assert Path(manifest["distillation"]["teacher"]).name.startswith("SmolLM2-135M-Instruct")
    assert manifest["source_model"]["num_parameters"] < 120_000_000  # the student's, not 134M
    quality = manifest["quality"]
    assert quality["judged_against"] == "teacher"
    # the teacher's perplexity on the evaluation text, not the student's own fp32
    assert quality["reference_perplexity"] < quality["perplexity"]
    assert 0 < quality["retention"] < 1
