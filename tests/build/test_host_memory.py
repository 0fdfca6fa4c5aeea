"""A build that would not fit this machine's memory: refused in one line before any work.

The unit tests give check_memory a machine's RAM; the integration test runs the CLI in a real
cgroup with a memory limit (creating one needs root; elsewhere it skips)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgepack.build.host_memory import HostMemoryError, check_memory
from edgepack.device.detect import memory_limit
from edgepack.device.profiles import load_profile
from edgepack.export.support import inspect_model
from edgepack.plan.planner import plan
from tests.conftest import ROOT, config_dir

GB = 1e9


def todo(name, fmt, precision, profile="laptop"):
    p = plan(inspect_model(config_dir(name)), load_profile(profile))
    picked = [
        c for c in p.candidates if (c.format, c.precision) == (fmt, precision) and not c.is_student
    ]
    return [(None, load_profile(profile), p, picked, True)]


def test_a_7b_gguf_build_fits_24_gb_and_is_refused_on_8():
    work = todo("llama-2-7b", "gguf", "q4_k_m")
    needs = check_memory(work, ram=24 * GB, available=24 * GB)
    assert 13.5 * GB < needs["gguf q4_k_m"] < 16 * GB
    with pytest.raises(HostMemoryError) as refused:
        check_memory(work, ram=8 * GB, available=8 * GB)
    message = str(refused.value)
    assert "\n" not in message and "gguf q4_k_m" in message
    assert "more than its 8.0 GB" in message and "at least 17 GB" in message


def test_a_refusal_names_a_format_that_would_fit():
    # OpenVINO's export holds the PyTorch model and its traced graph; GGUF's streams
    work = todo("mistral-7b", "openvino", "int8", profile="t4")
    need = work[0][3][0].predicted.build_memory_bytes
    with pytest.raises(HostMemoryError, match="build --format gguf --precision "):
        check_memory(work, ram=need * 0.9, available=None)


def test_memory_that_is_only_busy_now_gets_a_note_not_a_refusal(capsys):
    work = todo("llama-2-7b", "gguf", "q4_k_m")
    check_memory(work, ram=64 * GB, available=4 * GB)
    assert "4.0 GB is available now" in capsys.readouterr().err


CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")


@pytest.fixture
def limited_cgroup():
    """A memory cgroup of 1.2 GB: the CLI's own process fits, a build of the default model's
    fp32 reference beside it does not."""
    if (CGROUP_V2 / "cgroup.controllers").is_file():
        group, limit_file = CGROUP_V2 / f"edgepack-test-{os.getpid()}", "memory.max"
    else:
        group, limit_file = CGROUP_V1 / f"edgepack-test-{os.getpid()}", "memory.limit_in_bytes"
    try:
        group.mkdir()
        (group / limit_file).write_text(str(int(1.2 * GB)))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here: {exc}")
    try:
        yield group
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.integration
def test_a_build_over_the_cgroup_limit_is_refused_before_any_work(limited_cgroup, tmp_path):
    out = tmp_path / "bundles"
    code = f"echo $$ > {limited_cgroup}/cgroup.procs && exec \"$@\""
    cmd = [sys.executable, "-m", "edgepack.cli.main", "build", "--target", "laptop"]
    cmd += ["--out", str(out), "--no-resolve"]
    started = time.monotonic()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        ["sh", "-c", code, "sh", *cmd], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "GB of memory on this machine" in lines[0], done.stderr[-2000:]
    assert "more than its 1.2 GB" in lines[0]
    assert time.monotonic() - started < 60
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_the_limit_read_is_this_process_cgroup_or_none():
    limit = memory_limit()
    assert limit is None or limit > 0
