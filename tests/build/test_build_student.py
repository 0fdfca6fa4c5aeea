"""Targets whose plan needs a student: build stops naming the commands, or makes the student.

On a memory budget (0.17 GB; iq4_nl with a q8_0 KV cache takes the whole model to 0.177) the
default model meets only as a student, ranked by quality the plan takes a width student (a
quarter of its MLP channels pruned, then healed); ranked by size, the smallest: an 8-layer
depth student. The device is edge-4gb's board with a NEON core without dot products (a
Cortex-A72's), on which llama.cpp repacks no weights: with them, the tied iq4_nl table would be
held twice (edgepack.plan.llamacpp_repack), q4_1 would become the smallest, and the 8-layer
student of two training steps, all but random, fails validation at q4_1 (top-1 agreement 0.778
at its 36 confident positions, against 0.8)."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import PROFILES, run_cli

pytestmark = pytest.mark.integration

NAME = "SmolLM2-135M-Instruct"


def tight_profile(tmp_path, name: str, floor: float, objective: str = "quality") -> Path:
    """edge-4gb with a memory budget no more than a student of the default model meets, on a
    NEON core without dot products (the module docstring says why)."""
    text = (PROFILES / "edge-4gb.toml").read_text().replace('name = "edge-4gb"', f'name = "{name}"')
    text = re.sub(r"^memory_gb = [^#\n]*", "memory_gb = 0.17 ", text, flags=re.M)
    text = re.sub(r"^isa = [^#\n]*", 'isa = ["neon", "fp16"] ', text, flags=re.M)
    text = re.sub(r'^objective = "[a-z]*"', f'objective = "{objective}"', text, flags=re.M)
    text = re.sub(r"^min_quality = [^#\n]*", f"min_quality = {floor} ", text, flags=re.M)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_plan_needing_a_student_stops_with_the_commands_that_make_it(tmp_path, default_model):
    out = tmp_path / "out"
    width = tight_profile(tmp_path, "tiny", 0.3)
    result = run_cli("build", "--target", str(width), "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line(result.stderr)
    assert (
        "tiny needs a student with 25% of its MLP channels pruned, healed by distillation" in line
    )
    prune = f"edgepack prune --ratio 0.25 --out pruned/{NAME}-w25"
    heal = f"edgepack distill --student pruned/{NAME}-w25 --out students/{NAME}-w25"
    assert f"`{prune} && {heal}`" in line and "--allow-distill" in line
    depth = tight_profile(tmp_path, "small", 0.01, "size")
    result = run_cli("build", "--target", str(depth), "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line(result.stderr)
    assert "small needs a distilled 8-layer student" in line
    assert f"`edgepack distill --layers 8 --out students/{NAME}-8L`" in line
    # a floor no student's prior meets: nothing fits, and the plan says what would
    result = run_cli(
        "build", "--target", str(tight_profile(tmp_path, "x", 0.85)), "--out", str(out)
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "fits, but its quality prior 0.46" in result.stderr
    assert not out.exists()


def test_allow_distill_makes_both_kinds_of_student_judged_against_the_teacher(tmp_path):
    # two steps do not make a student (its perplexity on WikiText-2 is many times the
    # teacher's): the floor is all but zero, the figures are what matter
    out = tmp_path / "out"
    targets = [
        tight_profile(tmp_path, "tiny", 1e-6),
        tight_profile(tmp_path, "small", 1e-6, "size"),
    ]
    result = run_cli(
        "build",
        *[arg for t in targets for arg in ("--target", str(t))],
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
    width, depth = json.loads(result.stdout)["bundles"]
    assert width["student"] == "student with 25% of its MLP channels pruned"
    assert width["student_layers"] is None
    assert Path(width["path"]).name == f"{NAME}-w25-tiny"
    assert depth["student_layers"] == 8 and depth["student"] == "8-layer student"
    assert Path(depth["path"]).name == f"{NAME}-8L-small"
    for bundle, parameters in ((width, 114_608_448), (depth, 56_632_896)):
        manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
        distillation = manifest["distillation"]
        assert Path(distillation["teacher"]).name.startswith(NAME)
        assert manifest["source_model"]["num_parameters"] == parameters  # the student's
        quality = manifest["quality"]
        assert quality["judged_against"] == "teacher"
        # the teacher's perplexity on the evaluation text, not the student's own fp32
        assert quality["reference_perplexity"] < quality["perplexity"]
        assert 0 < quality["retention"] < 1
        readme = (Path(bundle["path"]) / "README.md").read_text()
        assert f"{bundle['student']} of {NAME}" in readme
    pruned = json.loads((Path(width["path"]) / "manifest.json").read_text())["distillation"]
    assert pruned["student_layers"] is None
    report = pruned["report"]["student"]["pruned"]
    assert report["ratio"] == 0.25 and report["intermediate_size"] == {
        "before": 1536,
        "after": 1152,
    }
    assert report["parameters"]["after"] == 114_608_448
