"""The command line as users and scripts see it: JSON contracts, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from tests.conftest import PROFILES, ROOT, config_dir, run_cli

HEAVY = ("torch", "transformers", "openvino", "onnxruntime", "llama_cpp", "optimum", "nncf")


def assert_one_line_error(result, code=2, *fragments):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_targets_json():
    result = run_cli("targets", "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert [t["name"] for t in data] == ["edge-4gb", "laptop", "t4", "xeon"]
    assert all(t["description"] for t in data)


def test_targets_text():
    result = run_cli("targets")
    assert result.returncode == 0
    assert "edge-4gb" in result.stdout and "NVIDIA Tesla T4" in result.stdout


def test_inspect_json_config_only():
    result = run_cli("inspect", "--model", str(config_dir("mistral-7b")), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in (
        "path",
        "architecture",
        "model_type",
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "num_parameters",
        "formats",
    ):
        assert key in data
    assert data["num_parameters"] == 7_241_732_096
    assert data["path"] == str(config_dir("mistral-7b").resolve())


def test_plan_json_and_text():
    result = run_cli("plan", "--model", str(config_dir("llama-2-7b")), "--target", "t4", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["chosen"]["feasible"] and data["chosen"]["device"] == "gpu"
    text = run_cli("plan", "--model", str(config_dir("llama-2-7b")), "--target", "t4")
    assert text.returncode == 0
    assert "CHOSEN" in text.stdout and "weights 13.48 + KV cache 1.07" in text.stdout


def test_impossible_budget_exits_2_with_needs(tmp_path):
    profile = (PROFILES / "edge-4gb.toml").read_text()
    path = tmp_path / "tiny.toml"
    path.write_text(
        profile.replace('name = "edge-4gb"', 'name = "tiny"').replace(
            "memory_gb = 3.0 ", "memory_gb = 0.01 "
        )
    )
    model = str(config_dir("smollm2-135m"))
    result = run_cli("plan", "--model", model, "--target", str(path), "--json")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["chosen"] is None
    assert data["needs"]["memory_gb"] > 0.01
    assert_one_line_error(result, 2, "nothing fits tiny", "memory_gb >=")
    text = run_cli("plan", "--model", model, "--target", str(path))
    assert text.returncode == 2 and "nothing fits tiny" in text.stdout


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["plan", "--model", "tests/configs/llama-2-7b", "--target", "pi"], ["unknown target"]),
        (["plan", "--model", "/no/such/dir", "--target", "t4"], ["does not exist"]),
        (
            ["plan", "--model", "tests/configs/llama-2-7b", "--target", "/no/such.toml"],
            ["does not exist"],
        ),
        (["inspect", "--model", "tests"], ["no config.json"]),
        (["plan", "--model", "tests/configs/llama-2-7b"], ["--target"]),
        (["frobnicate"], ["No such command"]),
        (["build", "--target", "laptop", "--eval-tokens", "100"], ["--eval-tokens", "256"]),
    ],
)
def test_user_errors_are_one_line(args, fragments):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert any(f in result.stderr for f in fragments), result.stderr


def test_bad_profile_file_names_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    text = (PROFILES / "laptop.toml").read_text()
    path.write_text(text.replace("memory_gb = 6 ", "memory_gb = -6 "))
    result = run_cli("plan", "--model", str(config_dir("smollm2-135m")), "--target", str(path))
    assert_one_line_error(result, 2, "budget.memory_gb", "greater than 0")


def test_malformed_weights_and_pickle_via_cli(tmp_path):
    (tmp_path / "config.json").write_text(
        config_dir("smollm2-135m").joinpath("config.json").read_text()
    )
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00")
    assert_one_line_error(run_cli("inspect", "--model", str(tmp_path)), 2, "truncated")
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    assert_one_line_error(run_cli("inspect", "--model", str(tmp_path)), 2, "--allow-pickle")


LEAN = """
import sys
from edgepack.cli.main import main
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("LEAN-CHECK", code, ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["targets"],
        ["inspect", "--model", "tests/configs/llama-2-7b"],
        ["plan", "--model", "tests/configs/llama-2-7b", "--target", "t4", "--json"],
        ["inspect"],
        ["plan", "--target", "xeon"],
    ],
    ids=["help", "targets", "inspect", "plan", "inspect-default", "plan-default"],
)
def test_lean_imports(args):
    code = LEAN.format(args=args, heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    line = [x for x in result.stderr.splitlines() if x.startswith("LEAN-CHECK")][-1]
    _, exit_code, heavy = (line.split(" ") + [""])[:3]
    assert exit_code in ("0", "None"), result.stderr
    assert heavy == "", f"{args} imported {heavy}"


def test_default_model_plan():
    result = run_cli("plan", "--target", "edge-4gb", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"]["num_parameters"] == 134_515_008
    assert data["chosen"]["student_layers"] is None


def test_build_help_states_the_default_evaluation_size():
    from edgepack.measure.quality import EVAL_SCORED_TOKENS

    result = run_cli("build", "--help")
    assert f"(default: {EVAL_SCORED_TOKENS})" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bits-per-weight", "3"], "a gguf size target must be 4.6-8.5 bits per weight"),
        (["--bits-per-weight", "5", "--format", "onnx"], "format onnx takes no size target"),
        (["--bits-per-weight", "5", "--precision", "q8_0"], "not both"),
        (["--precision", "bpw3"], "a gguf size target must be 4.6-8.5 bits per weight"),
    ],
)
def test_a_size_target_out_of_reach_is_refused_before_any_work(tmp_path, args, message):
    result = run_cli("build", "--target", "edge-4gb", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
