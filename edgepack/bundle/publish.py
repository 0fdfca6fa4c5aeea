"""Publishing a bundle atomically (the safe reader of tarballs is edgepack.bundle.unpack).

A bundle is assembled in a staging directory beside its destination DEST; an existing
bundle stays untouched until the new one is complete. publish() then (1) writes DEST.tar.gz
under a temporary name, renamed to a "ready" name once closed; (2) swaps the directory in: on
Linux by one atomic exchange (renameat2 RENAME_EXCHANGE), so that at every instant DEST is the
old complete bundle or the new one; where the exchange is unavailable (another OS, a file system
without it) DEST is renamed to a retired name and the staging directory to DEST, and a crash
between the two, which leaves no DEST, is repaired by the next clean_leftovers(): it renames the
retired bundle (complete: it has its manifest.json) back to DEST; (3) replaces DEST.tar.gz by
the ready tarball in one rename, so it is never half-written.

Directory and tarball cannot change in one step: a crash between (2) and (3) leaves the new
directory beside the old tarball. The next clean_leftovers() finishes that publish: it moves the
ready tarball into place when its manifest is the one in DEST, and deletes it otherwise. So once
clean_leftovers() ran, DEST and DEST.tar.gz are the same complete bundle, old or new. It runs at
the start of every build and in verify, and removes the staging directories, half-written
tarballs and superseded bundles of builds whose process is gone. This holds whenever the process
dies (a crash, kill -9); files are not fsynced, so a power cut is left to the file system.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from ..cache import alive, write_atomic
from .kit import check_module, devicekit, kit_dir
from .unpack import MAX_MANIFEST_BYTES, UNREADABLE
from .unpack import remove as _remove

STAGING = ".edgepack-staging-"
RETIRED = ".edgepack-retired-"
TARBALL = ".edgepack-tarball-"  # a complete tarball waiting for its directory to be in place
_PREFIXES = "|".join(re.escape(p) for p in (STAGING, RETIRED, TARBALL))
_LEFTOVER = re.compile(rf"^({_PREFIXES})(\d+)-(.*)$", re.DOTALL)
_OURS: set[str] = set()  # staging directories this process made and still uses
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP}
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def kit_files(runtime: str) -> list[str]:
    """The kit modules a bundle for this runtime carries beside its model."""
    return [*shared_kit_files(), f"{devicekit().RUNNERS[runtime]}.py"]


def shared_kit_files() -> list[str]:
    """The kit modules every bundle carries (check.py and what it imports); runners aside."""
    return sorted(p.name for p in kit_dir().glob("*.py") if not p.name.startswith("run_"))


def file_entries(root: Path) -> list[dict]:
    sha256 = check_module().sha256_file
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == "manifest.json" or "__pycache__" in path.parts:
            continue
        entries.append({"path": rel, "sha256": sha256(path), "bytes": path.stat().st_size})
    return entries


def write_manifest(root: Path, manifest: dict) -> dict:
    """Write manifest.json with the file table of `root` and its own digest."""
    manifest = {**manifest, "files": file_entries(root)}
    manifest["manifest_sha256"] = check_module().manifest_digest(manifest)
    write_atomic(root / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def staging_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(dest.parent)
    path = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-{dest.name}-", dir=dest.parent))
    _OURS.add(path.name)
    return path


def clean_leftovers(parent: Path) -> None:
    """Finish or undo the publish of builds whose process is gone; remove what they left.

    A build stages several candidates side by side: directories this process made are kept (a
    leftover under our own pid is from an earlier process that had the same pid). Best effort:
    never raises OSError."""
    found = []
    for path in parent.glob(".edgepack-*"):
        match = _LEFTOVER.match(path.name)
        if not match or path.name in _OURS:
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and alive(pid):
            continue  # another build is still writing it
        found.append((path, match.group(1), match.group(3)))
    order = {RETIRED: 0, TARBALL: 1, STAGING: 2}  # restore directories before judging tarballs
    for path, kind, name in sorted(found, key=lambda item: order[item[1]]):
        if kind == RETIRED:
            _restore(path, parent / name)
        elif kind == TARBALL and name.endswith(".tar.gz"):
            _finish_tarball(path, parent / name[: -len(".tar.gz")])
        else:
            _remove(path)


def _restore(retired: Path, dest: Path) -> None:
    """Put a retired bundle back when its replacement never arrived; else delete it."""
    if not os.path.lexists(dest) and (retired / "manifest.json").is_file():
        with contextlib.suppress(OSError):  # else keep the only copy for a later run
            os.rename(retired, dest)
        return
    _remove(retired)


def _finish_tarball(ready: Path, dest: Path) -> None:
    """Move a complete tarball into place if it is DEST's bundle; else delete it."""
    digest = _dir_digest(dest)
    if digest is not None and _manifest_digest(ready, dest.name) == digest:
        with contextlib.suppress(OSError):
            os.replace(ready, dest.parent / f"{dest.name}.tar.gz")
            return
    _remove(ready)


def _dir_digest(dest: Path) -> str | None:
    try:
        return json.loads((dest / "manifest.json").read_text(encoding="utf-8"))["manifest_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _manifest_digest(tarball: Path, root: str) -> str | None:
    """The manifest digest inside a tarball publish() wrote (its manifest comes early)."""
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            for m in tf:
                if m.name == f"{root}/manifest.json" and m.isfile():
                    if m.size > MAX_MANIFEST_BYTES:
                        return None
                    return json.loads(tf.extractfile(m).read())["manifest_sha256"]
    except (*UNREADABLE, ValueError, KeyError, TypeError):
        return None
    return None


def publish(staging: Path, dest: Path) -> tuple[Path, Path]:
    """Put the finished staging directory in place as DEST and DEST.tar.gz (module docstring)."""
    if not (staging / "manifest.json").is_file():
        raise ValueError(f"{staging} has no manifest.json: write_manifest() comes before publish")
    pid = os.getpid()
    tarball = dest.parent / f"{dest.name}.tar.gz"
    partial = dest.parent / f"{STAGING}{pid}-{dest.name}.tar.gz"
    ready = dest.parent / f"{TARBALL}{pid}-{dest.name}.tar.gz"
    with tarfile.open(partial, "w:gz", compresslevel=TAR_LEVEL) as tf:
        for path in sorted(staging.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            arcname = str(PurePosixPath(dest.name) / path.relative_to(staging).as_posix())
            tf.add(path, arcname=arcname, recursive=False, filter=_plain)
    os.replace(partial, ready)
    _swap_in(staging, dest)
    os.replace(ready, tarball)
    return dest, tarball


# gzip level 1: weights barely compress, and level 9 spends 45x the time on them. On 100 MB of a
# random 1B model's ONNX int8 weights: level 1 2.1 s (52 % of the size), 6 17 s (47 %), 9 94 s
# (44 %); at level 9 a 1.5 GB bundle took 24 minutes to pack, a 7B one would take an hour.
TAR_LEVEL = 1


def _swap_in(staging: Path, dest: Path) -> None:
    """Make staging DEST; the old DEST, if any, is deleted once the new one is in place."""
    if not os.path.lexists(dest):
        os.rename(staging, dest)
    elif exchange(staging, dest):
        _remove(staging)  # the old bundle, now under the staging name
    else:
        retired = dest.parent / f"{RETIRED}{os.getpid()}-{dest.name}"
        _remove(retired)  # an earlier process with our pid: DEST exists, so it is stale
        os.rename(dest, retired)
        os.rename(staging, dest)
        _remove(retired)
    _OURS.discard(staging.name)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the platform or file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.cache
def _renameat2():
    """libc's renameat2 (Linux, glibc 2.28+ or musl), or None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info
