"""`edgepack verify --emulate`: an arm64 bundle installed and checked as its device would,
inside an arm64 Debian root under qemu-user with the profile's CPU model.

The bundle is copied into the root, and its README's commands run there with no network (a
fresh network namespace) and no compiler (a minbase root has none): a venv, pip from the
bundle's wheelhouse alone, then check.py --emulated. The check runs the device's own kernels
(NEON, dotprod), so integrity, the golden outputs and peak memory are judged; first token and
decode are reported, not judged: an emulator's speed is not the device's. A runtime built for
an instruction the emulated core lacks dies of SIGILL, which check.py names in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..liblog import say
from .emulate_cpu import cpuinfo
from .emulate_root import (
    EmulationError,
    ensure_binfmt,
    ensure_root,
    in_root,
    qemu_cpu,
    require_cpu,
    require_root,
    require_tools,
    suite_for,
)
from .run_check import check_report

INSTALL = (
    "python3 -m venv venv && venv/bin/pip install --no-index --find-links wheelhouse "
    "--require-hashes --disable-pip-version-check --progress-bar off -r requirements.txt"
)


def emulated_check(
    bundle: Path,
    cache: Path,
    cpu: str | None = None,
    profile: dict | None = None,
    check_args: list[str] | None = None,
    say=say,
) -> dict:
    """check.py's report of `bundle` run under emulation, with "emulation": the CPU model, the
    root, the install's seconds and its log's last lines, the check's seconds."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    target = manifest["target"]
    arch = target["hardware"]["arch"]
    if arch != "arm64":
        raise EmulationError(
            f"--emulate runs arm64 bundles under qemu; this bundle is for {arch}: run its "
            "check on such a host"
        )
    if not (bundle / "wheelhouse").is_dir():
        raise EmulationError(
            "the bundle has no wheelhouse/ to install from without the internet: rebuild it "
            "with --wheels"
        )
    require_root("--emulate")
    require_tools("unshare", "chroot")
    cpu = require_cpu(cpu) if cpu else qemu_cpu(target["hardware"]["cpu"])
    suite = suite_for(target["platform"]["glibc"], target["platform"]["python"])
    ensure_binfmt()
    root = ensure_root(suite, cache, say)
    work = Path(tempfile.mkdtemp(prefix="edgepack-emulate-", dir=root / "tmp"))
    inner = f"/tmp/{work.name}/bundle"
    try:
        shutil.copytree(bundle, work / "bundle", symlinks=True)
        # the device's /proc/cpuinfo, not this host's: runtimes read it (onnxruntime's cpuinfo
        # crashes on an x86 one under an aarch64 process)
        device_cpuinfo = work / "cpuinfo"
        device_cpuinfo.write_text(cpuinfo(root, cpu, os.cpu_count() or 1))
        args = list(check_args or [])
        if profile is not None:
            (work / "profile.json").write_text(json.dumps(profile))
            args += ["--profile", f"/tmp/{work.name}/profile.json"]
        say(f"installing the bundle in the emulated {suite} root ({cpu}), offline")
        started = time.monotonic()
        proc = in_root(root, cpu, f"cd {inner} && {INSTALL}", device_cpuinfo)
        install_s = time.monotonic() - started
        log = (proc.stdout + proc.stderr).strip().splitlines()
        if proc.returncode != 0:
            errors = [ln for ln in log if ln.startswith("ERROR")] or log[-1:] or ["no output"]
            raise EmulationError(f"the bundle does not install in the emulated root: {errors[0]}")
        say(f"running check.py under emulation ({cpu}); emulated runtimes are slow: minutes")
        started = time.monotonic()
        check = f"cd {inner} && venv/bin/python check.py --json --emulated 'qemu {cpu}'"
        check += "".join(f" '{a}'" for a in ["--repetitions", "1", *args])
        proc = in_root(root, cpu, check, device_cpuinfo)
        report = check_report(proc)
        report["emulation"] = {
            "cpu": cpu,
            "root": f"Debian {suite} arm64 (minbase, no compiler), no network",
            "install_s": round(install_s, 1),
            "install_log_tail": log[-3:],
            "check_s": round(time.monotonic() - started, 1),
        }
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
