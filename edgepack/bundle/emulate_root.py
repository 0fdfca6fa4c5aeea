"""An arm64 Debian root that runs aarch64 programs on this host through qemu-user.

The root is the Debian release whose glibc and Python the profile states (a Raspberry Pi OS 12
board is bookworm: glibc 2.36, Python 3.11), made once with mmdebstrap (minbase, python3 and
python3-venv: no compiler) and kept in the cache. The kernel runs its programs through
qemu-aarch64-static once binfmt_misc knows it (Debian's qemu-user-static states the entry;
registering it needs root). Everything here needs root and Debian's packages: without them
each step is an EmulationError naming what to install.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from ..cache import locked
from ..errors import EdgepackError
from ..liblog import say

# (glibc, Python) of a profile -> the Debian release that has both
SUITES = {("2.31", "3.9"): "bullseye", ("2.36", "3.11"): "bookworm", ("2.41", "3.13"): "trixie"}
PACKAGES = "python3,python3-venv"
QEMU = "qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")  # Debian's qemu-user-static
DEBIAN_PACKAGES = "qemu-user-static mmdebstrap arch-test"
READY = ".edgepack-ready"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT_S = 3600


class EmulationError(EdgepackError):
    """The bundle cannot be run under emulation here."""


def suite_for(glibc: str, python: str) -> str:
    suite = SUITES.get((glibc, python))
    if suite is None:
        known = ", ".join(f"{s} (glibc {g}, Python {p})" for (g, p), s in SUITES.items())
        raise EmulationError(
            f"no Debian release has glibc {glibc} with Python {python} to emulate the device; "
            f"profiles that state one of {known} can be emulated"
        )
    return suite


def qemu_cpu(cpu: str) -> str:
    """qemu's name for the profile's core ("4x Cortex-A76 @ 2.4 GHz" -> "cortex-a76")."""
    found = re.search(r"(Cortex-A\d+|Neoverse-[NV]\d|A64FX)", cpu, re.IGNORECASE)
    name = found.group(1).lower() if found else ""
    why = f"qemu has no model of the profile's CPU ({cpu!r}); pass --emulate-cpu"
    return require_cpu(name, why)


def require_cpu(name: str, why: str | None = None) -> str:
    """`name`, a CPU model this host's qemu-aarch64 emulates; else an EmulationError listing
    them (`why` first)."""
    require_tools(QEMU)
    out = subprocess.run([QEMU, "-cpu", "help"], capture_output=True, text=True).stdout
    known = [w for w in out.split() if w not in ("Available", "CPUs:")]
    if name not in known:
        why = why or f"qemu has no CPU {name!r}; pass --emulate-cpu"
        raise EmulationError(f"{why} with one of {', '.join(known)}")
    return name


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise EmulationError(
            f"emulating an arm64 device needs {', '.join(missing)}, absent here: "
            f"apt-get install {DEBIAN_PACKAGES} (Debian or Ubuntu, as root)"
        )


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EmulationError(f"{what} needs root (chroot, mounts): run as root, or sudo")


def ensure_binfmt() -> None:
    """The kernel runs aarch64 programs through qemu (binfmt_misc), registering it if need be."""
    if platform.machine() == "aarch64":
        return
    entry = BINFMT / "qemu-aarch64"
    if entry.is_file():
        if entry.read_text().startswith("enabled"):
            return
        raise EmulationError(f"binfmt_misc's qemu-aarch64 entry is disabled: echo 1 > {entry}")
    require_root("registering qemu-aarch64 with the kernel's binfmt_misc")
    require_tools(QEMU)
    if not BINFMT_ENTRY.is_file():
        raise EmulationError(f"{BINFMT_ENTRY} is missing: apt-get install qemu-user-static")
    if not (BINFMT / "register").exists():
        proc = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            why = proc.stderr.strip() or f"mount exited {proc.returncode}"
            raise EmulationError(f"cannot mount binfmt_misc at {BINFMT}: {why}")
    try:
        (BINFMT / "register").write_text(BINFMT_ENTRY.read_text().strip() + "\n")
    except OSError as exc:
        raise EmulationError(f"cannot register qemu-aarch64 with binfmt_misc: {exc}") from None


def ensure_root(suite: str, cache: Path, say=say) -> Path:
    """The cached arm64 root of `suite`, made now if missing (minutes, once)."""
    root = cache / "emulation" / f"debian-{suite}-arm64"
    with locked(root.with_name(root.name + ".lock")):
        if (root / READY).is_file():
            return root
        require_root(f"making the arm64 {suite} root")
        require_tools(QEMU, "mmdebstrap", "arch-test")
        ensure_binfmt()
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        say(f"making an arm64 Debian {suite} root for emulation (about 5 minutes, once: cached)")
        log = root.with_name(root.name + ".log")
        cmd = ["mmdebstrap", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}"]
        with open(log, "w") as out:
            proc = subprocess.run([*cmd, suite, str(partial)], stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise EmulationError(
                f"mmdebstrap could not make the {suite} root ({lines[-1] if lines else 'no output'}"
                f"); its log: {log}"
            )
        partial.rename(root)
        (root / READY).write_text(suite + "\n")
        return root


def in_root(
    root: Path, cpu: str, script: str, cpuinfo: Path | None = None
) -> subprocess.CompletedProcess:
    """`script` by /bin/sh inside `root` on qemu's `cpu`, in namespaces of its own: no network,
    /proc, /sys and /dev mounted for it alone, and `cpuinfo` (the device's) as /proc/cpuinfo."""
    mounts = f'mount -t proc proc "{root}/proc"'
    if cpuinfo is not None:
        mounts += f' && mount --bind "{cpuinfo}" "{root}/proc/cpuinfo"'
    mounts += (
        f' && mount --rbind /sys "{root}/sys" && mount --rbind /dev "{root}/dev"'
        f' && exec chroot "{root}" /bin/sh -c "$0"'
    )
    env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": cpu}
    cmd = ["unshare", "--net", "--mount", "--pid", "--fork", "/bin/sh", "-c", mounts, script]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"the emulated run passed {TIMEOUT_S} s: {script[:80]}") from None
