"""Reading a bundle tarball safely (`edgepack verify`).

A tarball is checked member by member against the rules (regular files and directories
only, no absolute paths, no `..`, no links or devices, exactly the files its manifest lists, at
their sizes) and read to the end of its gzip stream before a single byte is written, and then
written only inside a fresh directory. A truncated or corrupt archive (an interrupted download)
is a VerificationError, and whatever was written by then is removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import VerificationError

MAX_MANIFEST_BYTES = 50_000_000
SIGNATURE = "model.sig"  # the kit's signature.SIGNATURE: a signed bundle's, beside its manifest
MAX_SIGNATURE_BYTES = 1_000_000
MAX_TRAILING_BYTES = 1 << 20  # after the end-of-archive blocks: tar pads to 10240 bytes
# What reading a damaged .tar.gz raises (gzip.BadGzipFile is an OSError).
UNREADABLE = (EOFError, zlib.error, tarfile.TarError, OSError)


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
    except UNREADABLE as exc:
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
    """Members are exactly the manifest's files (and their directories), at their sizes, and
    a signed bundle's model.sig, which signs the manifest and so cannot be listed in it."""
    listed = {f"{root}/{f['path']}": f["bytes"] for f in manifest["files"]}
    listed[f"{root}/manifest.json"] = None
    signature = f"{root}/{SIGNATURE}"
    allowed_dirs = {root}
    for name in listed:
        parts = PurePosixPath(name).parents
        allowed_dirs.update(str(p) for p in parts if str(p) != ".")
    for m in members:
        if m.isdir():
            if m.name.rstrip("/") not in allowed_dirs:
                raise VerificationError(f"{tarball}: directory {m.name} is not in the manifest")
        elif m.name == signature:
            if m.size > MAX_SIGNATURE_BYTES:
                raise VerificationError(f"{tarball}: {m.name} is implausibly large")
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
                remove(child)
        if isinstance(exc, OSError):  # the disk, not the tarball (_Damaged is no OSError)
            raise VerificationError(f"cannot unpack {tarball} into {into}: {exc}") from None
        raise
    return base / root


class _Damaged(Exception):
    """Reading a member's data failed: the archive, not the disk, is at fault."""


def _read(source) -> bytes:
    try:
        return source.read(1 << 20)
    except UNREADABLE as exc:
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


def remove(path: Path) -> None:
    """Remove a file or a directory tree, as far as it can be (never raises OSError)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
