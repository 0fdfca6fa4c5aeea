"""Bundles: the atomic writer, and the safe reader of bundle tarballs.

Writer: a bundle is assembled in a staging directory beside its destination DEST; an existing
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

Reader: a tarball is checked member by member against the rules (regular files and directories
only, no absolute paths, no `..`, no links or devices, exactly the files its manifest lists, at
their sizes) and read to the end of its gzip stream before a single byte is written, and then
written only inside a fresh directory. A truncated or corrupt archive (an interrupted download)
is a VerificationError, and whatever was written by then is removed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from ..cache import alive, write_atomic
from ..errors import VerificationError
from .kit import check_module, devicekit, kit_dir

STAGING = ".edgepack-staging-"
RETIRED = ".edgepack-retired-"
TARBALL = ".edgepack-tarball-"  # a complete tarball waiting for its directory to be in place
MAX_MANIFEST_BYTES = 50_000_000
MAX_TRAILING_BYTES = 1 << 20  # after the end-of-archive blocks: tar pads to 10240 bytes
_PREFIXES = "|".join(re.escape(p) for p in (STAGING, RETIRED, TARBALL))
_LEFTOVER = re.compile(rf"^({_PREFIXES})(\d+)-(.*)$", re.DOTALL)
_OURS: set[str] = set()  # staging directories this process made and still uses
# What reading a damaged .tar.gz raises (gzip.BadGzipFile is an OSError).
_UNREADABLE = (EOFError, zlib.error, tarfile.TarError, OSError)
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
    except (*_UNREADABLE, ValueError, KeyError, TypeError):
        return None
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def publish(staging: Path, dest: Path) -> tuple[Path, Path]:
    """Put the finished staging directory in place as DEST and DEST.tar.gz (module docstring)."""
    if not (staging / "manifest.json").is_file():
        raise ValueError(f"{staging} has no manifest.json: write_manifest() comes before publish")
    pid = os.getpid()
    tarball = dest.parent / f"{dest.name}.tar.gz"
    partial = dest.parent / f"{STAGING}{pid}-{dest.name}.tar.gz"
    ready = dest.parent / f"{TARBALL}{pid}-{dest.name}.tar.gz"
    with tarfile.open(partial, "w:gz") as tf:
        for path in sorted(staging.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            arcname = str(PurePosixPath(dest.name) / path.relative_to(staging).as_posix())
            tf.add(path, arcname=arcname, recursive=False, filter=_plain)
    os.replace(partial, ready)
    _swap_in(staging, dest)
    os.replace(ready, tarball)
    return dest, tarball


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


def unpack(tarball: Path, into: Path) -> Path:
    """Safely unpack a bundle tarball into the fresh directory `into`; return the bundle root."""
    if into.exists() and any(into.iterdir()):
        raise VerificationError(f"{into} is not empty; verify unpacks into a fresh directory")
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            members = tf.getmembers()
            _read_to_end(tf, tarball)
            root = _check_members(tarball, members)
            manifest = _read_manifest(tf, members, root, tarball)
            _check_listed(tarball, members, root, manifest)
            return _extract(tf, members, root, into, tarball)
    except _Damaged as exc:
        raise _broken(tarball, exc.args[0]) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise VerificationError(f"cannot read {tarball}: {exc.strerror}") from None
    except _UNREADABLE as exc:
        raise _broken(tarball, exc) from None


def _broken(tarball: Path, exc: BaseException) -> VerificationError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return VerificationError(f"{tarball} is truncated or corrupt ({detail}): download it again")


def _read_to_end(tf: tarfile.TarFile, tarball: Path) -> None:
    """Read past the end-of-archive blocks to the gzip trailer, which carries the CRC and the
    length: a download cut there still lists every member."""
    rest = 0
    while chunk := tf.fileobj.read(1 << 16):
        rest += len(chunk)
        if rest > MAX_TRAILING_BYTES:
            raise VerificationError(
                f"{tarball} is corrupt (data after the end of the archive): download it again"
            )


def _check_listed(tarball: Path, members: list[tarfile.TarInfo], root: str, manifest: dict):
    """Members are exactly the manifest's files (and their directories), at their sizes."""
    listed = {f"{root}/{f['path']}": f["bytes"] for f in manifest["files"]}
    listed[f"{root}/manifest.json"] = None
    allowed_dirs = {root}
    for name in listed:
        parts = PurePosixPath(name).parents
        allowed_dirs.update(str(p) for p in parts if str(p) != ".")
    for m in members:
        if m.isdir():
            if m.name.rstrip("/") not in allowed_dirs:
                raise VerificationError(f"{tarball}: directory {m.name} is not in the manifest")
        elif m.name not in listed:
            raise VerificationError(f"{tarball}: member {m.name} is not in the manifest")
        elif listed[m.name] is not None and m.size != listed[m.name]:
            raise VerificationError(
                f"{tarball}: member {m.name} has {m.size} bytes, the manifest says "
                f"{listed[m.name]}"
            )
    missing = sorted(set(listed) - {m.name for m in members if not m.isdir()})
    if missing:
        raise VerificationError(
            f"{tarball} lacks {len(missing)} file(s) of its manifest, {missing[0]} first: "
            "it is incomplete, download it again"
        )


def _extract(tf: tarfile.TarFile, members, root: str, into: Path, tarball: Path) -> Path:
    """Write the checked members under `into`; on any failure remove what was written."""
    base = into.resolve()
    for m in members:
        target = (base / m.name).resolve()
        if base not in target.parents and target != base:
            raise VerificationError(f"{tarball}: member {m.name} escapes the directory")
    created = not into.exists()
    try:
        into.mkdir(parents=True, exist_ok=True)
        for m in members:
            target = base / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tf.extractfile(m)
            with open(target, "wb") as out:
                while chunk := _read(source):
                    out.write(chunk)
    except BaseException as exc:
        if created:
            shutil.rmtree(base, ignore_errors=True)
        elif base.is_dir():
            for child in base.iterdir():
                _remove(child)
        if isinstance(exc, OSError):  # the disk, not the tarball (_Damaged is no OSError)
            raise VerificationError(f"cannot unpack {tarball} into {into}: {exc}") from None
        raise
    return base / root


class _Damaged(Exception):
    """Reading a member's data failed: the archive, not the disk, is at fault."""


def _read(source) -> bytes:
    try:
        return source.read(1 << 20)
    except _UNREADABLE as exc:
        raise _Damaged(exc) from None


def _check_members(tarball: Path, members: list[tarfile.TarInfo]) -> str:
    roots = set()
    for m in members:
        name = m.name
        path = PurePosixPath(name)
        if name.startswith("/") or path.is_absolute() or "\\" in name or ":" in path.parts[0]:
            raise VerificationError(f"{tarball}: member {name} has an absolute path")
        if ".." in path.parts:
            raise VerificationError(f"{tarball}: member {name} contains '..'")
        if m.issym() or m.islnk():
            raise VerificationError(f"{tarball}: member {name} is a link")
        if not (m.isfile() or m.isdir()):
            raise VerificationError(f"{tarball}: member {name} is not a regular file or directory")
        roots.add(path.parts[0])
    if len(roots) != 1:
        raise VerificationError(
            f"{tarball}: a bundle has one top-level directory, found {len(roots)}"
        )
    return roots.pop()


def _read_manifest(tf, members, root: str, tarball: Path) -> dict:
    entry = next((m for m in members if m.name == f"{root}/manifest.json"), None)
    if entry is None or not entry.isfile():
        raise VerificationError(f"{tarball}: no {root}/manifest.json")
    if entry.size > MAX_MANIFEST_BYTES:
        raise VerificationError(f"{tarball}: manifest.json is implausibly large")
    try:
        manifest = json.loads(tf.extractfile(entry).read().decode("utf-8"))
        files = manifest["files"]
        for f in files:
            path = PurePosixPath(f["path"])
            if path.is_absolute() or ".." in path.parts or not isinstance(f["bytes"], int):
                raise ValueError(f"bad file entry {f['path']!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise VerificationError(f"{tarball}: manifest.json is malformed: {exc}") from None
    return manifest
