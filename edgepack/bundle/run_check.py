"""A bundle's own check.py run in a fresh interpreter, and its JSON report read back (the same
for a build's check on this host, `edgepack verify`, and an emulated run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_bundle_check(bundle: Path, extra: list[str] | None = None) -> dict:
    """The bundle's own check.py --json in a fresh interpreter: its report and exit code."""
    proc = subprocess.run(
        [sys.executable, str(bundle / "check.py"), "--json", *(extra or [])],
        capture_output=True,
        text=True,
    )
    return check_report(proc)


def check_report(proc: subprocess.CompletedProcess) -> dict:
    """check.py --json's report and exit code, or an ERROR report where it printed none."""
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"pass": False, "verdict": "ERROR", "error": f"check.py crashed: {tail}"}
    report["exit_code"] = proc.returncode
    return report
