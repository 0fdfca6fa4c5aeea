"""Libraries' output goes to a log during long commands; edgepack's own stays on the terminal."""

import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import os, subprocess, sys, warnings
from edgepack.liblog import libraries_to_log, terminal
with libraries_to_log("test") as path:
    os.write(1, b"C-level stdout noise\\n")
    os.write(2, b"C-level stderr noise\\n")
    print("python stdout noise")
    warnings.warn("a library warning")
    subprocess.run([sys.executable, "-c", "import sys; print('child noise', file=sys.stderr)"])
    print("progress line", file=terminal())
print("RESULT", path)
"""


def run(tmp_path, **env):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "EDGEPACK_CACHE": str(tmp_path), **env},
        timeout=120,
    )


def test_libraries_go_to_the_log_and_progress_to_the_terminal(tmp_path):
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "progress line" in r.stderr and "libraries' messages are in" in r.stderr
    assert "noise" not in r.stdout + r.stderr and "warning" not in r.stderr
    path = r.stdout.split("RESULT ", 1)[1].strip()
    log = open(path).read()
    for text in ("C-level stdout", "C-level stderr", "python stdout", "library warning", "child"):
        assert text in log, text
    assert path.startswith(str(tmp_path / "logs"))


def test_verbose_and_a_read_only_cache_leave_everything_on_the_terminal(tmp_path):
    r = run(tmp_path, EDGEPACK_VERBOSE="1")
    assert "C-level stderr noise" in r.stderr and "RESULT None" in r.stdout
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "logs").write_text("a file where the folder would be")
    r = run(tmp_path / "ro")
    assert r.returncode == 0 and "C-level stderr noise" in r.stderr and "RESULT None" in r.stdout


def test_an_empty_log_is_removed_and_not_named(tmp_path):
    quiet = SCRIPT.split("with libraries_to_log")[0] + (
        'with libraries_to_log("test") as path:\n    print("progress", file=terminal())\n'
        'print("RESULT", path)\n'
    )
    r = subprocess.run(
        [sys.executable, "-c", quiet],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "EDGEPACK_CACHE": str(tmp_path)},
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "progress\n", r.stderr
    assert not list((tmp_path / "logs").glob("*.log"))


def test_only_the_newest_logs_are_kept(tmp_path):
    for _ in range(3):
        run(tmp_path)
    from edgepack.liblog import KEEP, _prune

    logs = tmp_path / "logs"
    for i in range(KEEP + 5):
        (logs / f"old-{i}.log").write_text("x")
    _prune(logs)
    assert len(list(logs.glob("*.log"))) == KEEP - 1
