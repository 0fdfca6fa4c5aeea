"""A full disk: refused before the work from the plan's sizes, or one line when it still happens.

The small disk is a real tmpfs (mounting one needs root; elsewhere these tests skip)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgepack.build.space import disk_error
from tests.conftest import run_cli

pytestmark = pytest.mark.integration  # the CLI in fresh interpreters, the default model


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_build_that_cannot_fit_stops_before_writing(small_disk):
    start = time.monotonic()
    out = small_disk / "bundles"
    result = run_cli("build", "--target", "edge-4gb", "--out", str(out), "--no-resolve")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: not enough free space in ")
    assert str(out) in lines[-1] and "GB is free" in lines[-1]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert list(small_disk.iterdir()) == []  # nothing written, not even --out
    assert time.monotonic() - start < 60


def test_a_full_disk_met_while_writing_is_one_line(small_disk):
    with pytest.raises(OSError) as full:  # a real ENOSPC: fill the disk
        with open(small_disk / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 2**20)
    message = disk_error(full.value)  # a write() names no file
    assert message.startswith("No space left on device: nothing partial was kept")
    # shutil.copytree gathers its failures into one shutil.Error of (src, dst, reason) tuples
    src = small_disk.parent / "tree"
    src.mkdir()
    (src / "model.gguf").write_bytes(b"\1" * 2**20)
    with pytest.raises(shutil.Error) as copied:
        shutil.copytree(src, small_disk / "copy")
    message = disk_error(copied.value)
    assert message.startswith(f"No space left on device writing in {small_disk / 'copy'} (")
    assert "[(" not in message and "MB free now" in message
    with contextlib.suppress(OSError):
        (small_disk / "filler").unlink()
    assert disk_error(ValueError("other")) is None
    assert disk_error(FileNotFoundError(2, "No such file or directory", "x")) is None


def test_the_cli_turns_a_full_disk_into_exit_2(small_disk):
    """A command that meets a full disk (materialising the default model into the cache, here:
    safetensors names the OS error in its own exception) exits 2 in one line, not as an
    internal error."""
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        while True:
            fh.write(b"\0" * 2**20)
    env = {"EDGEPACK_CACHE": str(small_disk / "cache")}
    result = run_cli("inspect", env=env)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No space left on device")
    assert "internal error" not in result.stderr
    assert Path(small_disk).exists()
