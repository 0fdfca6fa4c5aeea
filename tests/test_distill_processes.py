"""Distillation on several processes: `torchrun --nproc_per_node 2 -m edgepack distill` on this
CPU (gloo), a few steps of a tiny random Llama teacher: one student, written by one process."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.tiny import make_tiny

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_make_one_student(tmp_path, default_model):
    teacher = make_tiny("llama", tmp_path / "teacher", default_model)
    out = tmp_path / "student"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    cmd += ["-m", "edgepack", "distill", "--teacher", str(teacher), "--layers", "1"]
    cmd += ["--steps", "4", "--seq-len", "32", "--batch", "2", "--save-steps", "2"]
    cmd += ["--out", str(out), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)  # one JSON document: the other process prints nothing
    training = report["training"]
    assert training["processes"] == 2 and training["global_step"] == 4
    # each step trained 2 windows of 32 tokens on each process
    assert training["tokens_trained"] == 4 * 2 * 32 * 2
    assert report["student"]["num_layers"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "distill_report.json").read_text()) == report
    assert not list(out.glob(".saving*")) and not list(out.glob("*.tmp"))
