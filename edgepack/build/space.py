"""Disk space, known before the work: what a build will write against what is free.

Before any export the build adds up, from the plan's predicted sizes (disk_bytes), what it will
write:
- in the export cache: every picked candidate's export not cached yet;
- in the temporary directory: the f16 GGUF a GGUF export converts first (2 bytes a parameter),
  where one is needed;
- in --out: every picked candidate's staged bundle (the measured ones stay until the build ends)
  and each target's tarball.
Directories on one filesystem are added together, with MARGIN for what the predictions leave
out (tokenizer files, logs, the report). A build that cannot fit stops in one line, naming the
directory, what it needs and what is free, before anything is written. An ENOSPC, EDQUOT or
EROFS that still happens (another writer, a size predicted short) becomes a one-line error at
the CLI (edgepack.cli.main: disk_error), and the staging is removed as on any failure.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import EdgepackError
from ..export.export_cache import is_cached

GB = 1e9
MARGIN = 1.1
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class DiskSpaceError(EdgepackError):
    """Not enough free space for the build's outputs (exit 2)."""


def check_space(todo, out: Path, cache: Path, calibration: str | None) -> dict:
    """Raise DiskSpaceError where a directory's filesystem cannot hold what the build writes;
    return {directory: bytes needed} for the record. todo: (source, profile, plan, picked,
    forced) per target, as edgepack.build.pipeline builds it."""
    needs: dict[Path, int] = {}

    def add(path: Path, size: float) -> None:
        if size > 0:
            needs[path] = needs.get(path, 0) + int(size)

    for source, _profile, _plan, picked, _forced in todo:
        for c in picked:
            size = c.predicted.disk_bytes
            add(out, size)
            if not is_cached(source.model_dir, c.format, c.precision, cache, calibration):
                add(cache / "exports", size)
                if c.format == "gguf":
                    add(Path(tempfile.gettempdir()), 2 * source.facts.num_parameters)
        add(out, max((c.predicted.disk_bytes for c in picked), default=0))  # the tarball
    by_device: dict[int, tuple[list[Path], int]] = {}
    for path, size in needs.items():
        where = _existing(path)
        paths, total = by_device.get(os.stat(where).st_dev, ([], 0))
        by_device[os.stat(where).st_dev] = ([*paths, path], total + size)
    for paths, total in by_device.values():
        free = shutil.disk_usage(_existing(paths[0])).free
        if total * MARGIN > free:
            names = " and ".join(str(p) for p in paths)
            raise DiskSpaceError(
                f"not enough free space in {names}: the build writes about "
                f"{total * MARGIN / GB:.2f} GB there (exports, bundles and tarballs, from the "
                f"plan's predicted sizes), {free / GB:.2f} GB is free; free space, or choose "
                "another --out (EDGEPACK_CACHE moves the cache)"
            )
    return {str(p): n for p, n in needs.items()}


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (a directory the build will create)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_error(exc: BaseException) -> str | None:
    """The one-line message for a full, over-quota or read-only disk met while writing, or
    None for any other error. shutil's copytree gathers its failures into shutil.Error; other
    libraries name the OS error in their own exceptions' text."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        where = exc.filename or exc.filename2
        return _message(exc.strerror or os.strerror(exc.errno), where)
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        for entry in exc.args[0]:
            if len(entry) == 3 and any(os.strerror(n) in str(entry[2]) for n in DISK_ERRNOS):
                reason = next(os.strerror(n) for n in DISK_ERRNOS if os.strerror(n) in entry[2])
                return _message(reason, entry[1])
    # a library that reports the OS error in its own exception (safetensors' SafetensorError:
    # "I/O error: No space left on device (os error 28)")
    for n in DISK_ERRNOS:
        if f"(os error {n})" in str(exc) or f"[Errno {n}]" in str(exc):
            return _message(f"{os.strerror(n)} ({type(exc).__name__})", None)
    return None


def _message(reason: str, where) -> str:
    directory = Path(where).parent if where else None
    place = f" writing in {directory}" if directory else ""
    free = ""
    if directory is not None:
        try:
            free = f" ({shutil.disk_usage(_existing(directory)).free / 1e6:,.0f} MB free now)"
        except OSError:
            free = ""
    return (
        f"{reason}{place}{free}: nothing partial was kept; free space, or choose another "
        "--out (EDGEPACK_CACHE moves the cache)"
    )
