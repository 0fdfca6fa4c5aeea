"""Bundles: the atomic writer, and the safe reader of bundle tarballs.

Writer: everything is assembled in a staging directory beside the destination and renamed into
place at the end; an existing bundle stays untouched until the new one is complete, and
leftovers of a killed build are removed by the next one.

Reader: a tarball is checked member by member against the rules (regular files and directories
only, no absolute paths, no `..`, no links or devices, only the files its manifest lists, at
their listed sizes) before a single byte is written, and then written only inside a fresh
directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from .errors import VerificationError
from .kit import check_module, devicekit

STAGING = ".edgepack-staging-"
RETIRED = ".edgepack-retired-"
MAX_MANIFEST_BYTES = 50_000_000
_LEFTOVER = re.compile(rf"^(?:{re.escape(STAGING)}|{re.escape(RETIRED)})(\d+)-")
_OURS: set[str] = set()  # staging directories this process made and still uses


def kit_files(runtime: str) -> list[str]:
    """The kit modules a bundle for this runtime carries beside its model."""
    return ["check.py", "devicekit.py", f"{devicekit().RUNNERS[runtime]}.py"]


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
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(root / "manifest.json")
    return manifest


def staging_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(dest.parent)
    path = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-{dest.name}-", dir=dest.parent))
    _OURS.add(path.name)
    return path


def clean_leftovers(parent: Path) -> None:
    """Remove staging and retired directories of builds whose process is gone.

    A build stages several candidates side by side: directories this process made are kept
    (a leftover under our own pid is from an earlier process that had the same pid)."""
    for path in parent.glob(".edgepack-*"):
        match = _LEFTOVER.match(path.name)
        if not match or path.name in _OURS:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _alive(pid):
            continue  # another build is still writing it
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(staging: Path, dest: Path) -> tuple[Path, Path]:
    """Swap the finished staging directory into place, then write DEST.tar.gz atomically."""
    tarball = dest.parent / f"{dest.name}.tar.gz"
    tmp_tar = dest.parent / f"{STAGING}{os.getpid()}-{dest.name}.tar.gz"
    with tarfile.open(tmp_tar, "w:gz") as tf:
        for path in sorted(staging.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            arcname = str(PurePosixPath(dest.name) / path.relative_to(staging).as_posix())
            tf.add(path, arcname=arcname, recursive=False, filter=_plain)
    if dest.exists():
        retired = dest.parent / f"{RETIRED}{os.getpid()}-{dest.name}"
        dest.rename(retired)
        staging.rename(dest)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(dest)
    tmp_tar.replace(tarball)
    return dest, tarball


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
        tf = tarfile.open(tarball, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise VerificationError(f"{tarball} is not a readable .tar.gz: {exc}") from None
    with tf:
        members = tf.getmembers()
        root = _check_members(tarball, members)
        manifest = _read_manifest(tf, members, root, tarball)
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
        into.mkdir(parents=True, exist_ok=True)
        base = into.resolve()
        for m in members:
            target = (base / m.name).resolve()
            if base not in target.parents and target != base:
                raise VerificationError(f"{tarball}: member {m.name} escapes the directory")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tf.extractfile(m)
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 20)
    return base / root


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
