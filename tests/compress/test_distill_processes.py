"""Distillation on several processes: `torchrun --nproc_per_node 2 -m edgepack distill` and
`accelerate launch --multi_gpu --num_processes 2 -m edgepack distill` on this CPU (gloo), a few
steps of a tiny random Llama teacher: one student, written by one process, one report printed.

accelerate's `--cpu` flag starts a single process unless given an MPI host file; its
`--multi_gpu` launcher is torchrun's, and on a host without a GPU the Trainer trains with gloo."""

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


def launcher(name: str) -> list[str]:
    if name == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        return cmd + ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    cmd += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--main_process_ip", "127.0.0.1"]
    return cmd + ["--main_process_port", str(free_port())]


@pytest.mark.parametrize("name", ["torchrun", "accelerate"])
def test_two_processes_make_one_student(tmp_path, default_model, name):
    teacher = make_tiny("llama", tmp_path / "teacher", default_model)
    out = tmp_path / "student"
    cmd = [*launcher(name), "-m", "edgepack", "distill", "--teacher", str(teacher), "--layers", "1"]
    cmd += ["--steps", "4", "--seq-len", "32", "--batch", "2", "--save-steps", "2"]
    cmd += ["--out", str(out), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    # the second process works silently: one set of notes, one report, one log named
    assert r.stderr.count("distill: loading the teacher") == 1, r.stderr[-3000:]
    assert r.stderr.count("-layer student of a 2-layer teacher") == 1
    assert r.stderr.count("the libraries' messages are in") <= 1
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
