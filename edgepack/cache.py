"""What every cached artifact shares: where the cache is, content keys, pid liveness, atomic
writes, locks. Stdlib only; the formats, the exports, the reference and the default model use it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

# Bump when what a content key covers changes, so that every cache keyed by it is rebuilt.
KEY_VERSION = 1


def cache_root() -> Path:
    """$EDGEPACK_CACHE, else $XDG_CACHE_HOME/edgepack, else ~/.cache/edgepack."""
    if os.environ.get("EDGEPACK_CACHE"):
        return Path(os.environ["EDGEPACK_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edgepack"


def content_key(model_dir: Path) -> str:
    """A cheap key of a model directory's content: names, sizes and the first MB of every file
    (its headers included)."""
    digest = hashlib.sha256(f"v{KEY_VERSION}".encode())
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


def alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write beside the destination, then rename over it: a reader sees the old file or the
    whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock on `path` (created if missing) for the block: builds running side
    by side that need the same cache entry make it once, the others waiting, then reading it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
