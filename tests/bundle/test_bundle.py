"""Bundle writer and reader rules, on a small synthetic bundle (no backend needed)."""

import io
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from edgepack.bundle.kit import check_module, kit_dir
from edgepack.bundle.publish import (
    clean_leftovers,
    publish,
    shared_kit_files,
    staging_dir,
    write_manifest,
)
from edgepack.bundle.unpack import unpack
from edgepack.errors import VerificationError
from tests.conftest import run_cli


def make_bundle(tmp_path, name="demo-edge"):
    dest = tmp_path / "out" / name
    staging = staging_dir(dest)
    (staging / "model").mkdir()
    (staging / "model" / "weights.bin").write_bytes(b"\x01" * 1000)
    for kit in shared_kit_files():
        (staging / kit).write_bytes((kit_dir() / kit).read_bytes())
    manifest = write_manifest(staging, {"schema_version": 1, "runtime": {"name": "x"}})
    path, tarball = publish(staging, dest)
    return path, tarball, manifest


def test_manifest_lists_every_file_and_its_digest(tmp_path):
    path, tarball, manifest = make_bundle(tmp_path)
    assert {"check.py", "devicekit.py"} <= set(shared_kit_files())
    assert {f["path"] for f in manifest["files"]} == {"model/weights.bin", *shared_kit_files()}
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk == manifest
    assert check_module().manifest_digest(on_disk) == on_disk["manifest_sha256"]
    assert tarball.name == "demo-edge.tar.gz"


def test_publish_replaces_an_existing_bundle_only_when_complete(tmp_path):
    path, _, first = make_bundle(tmp_path)
    path2, _, second = make_bundle(tmp_path)
    assert path == path2
    assert not list(path.parent.glob(".edgepack-*"))


def test_leftovers_of_a_dead_build_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".edgepack-staging-999999999-demo-edge-abc"
    dead.mkdir()
    (dead / "partial").write_text("x")
    alive = out / f".edgepack-staging-{os.getppid()}-demo-edge-def"
    alive.mkdir()
    clean_leftovers(out)
    assert not dead.exists()
    assert alive.exists(), "a running build's staging directory must be left alone"


def test_staging_directories_of_this_build_survive_each_other(tmp_path):
    dest = tmp_path / "out" / "demo-edge"
    first = staging_dir(dest)
    second = staging_dir(dest)  # a second candidate of the same build
    assert first.exists() and second.exists() and first != second
    own_leftover = dest.parent / f".edgepack-staging-{os.getpid()}-demo-edge-old"
    own_leftover.mkdir()  # an earlier process that had our pid
    clean_leftovers(dest.parent)
    assert first.exists() and second.exists() and not own_leftover.exists()


def test_unpack_round_trip(tmp_path):
    _, tarball, manifest = make_bundle(tmp_path)
    root = unpack(tarball, tmp_path / "fresh")
    assert (root / "model" / "weights.bin").read_bytes() == b"\x01" * 1000
    assert json.loads((root / "manifest.json").read_text()) == manifest


def _evil_tar(tmp_path, good_tarball, add):
    """A copy of a good bundle tarball with one extra member."""
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(good_tarball) as src, tarfile.open(evil, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        add(dst)
    return evil


def _file(name, data=b"pwned"):
    def add(tf):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))

    return add


def _link(name, target, kind=tarfile.SYMTYPE):
    def add(tf):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        tf.addfile(info)

    return add


def _device(name):
    def add(tf):
        info = tarfile.TarInfo(name)
        info.type = tarfile.CHRTYPE
        tf.addfile(info)

    return add


@pytest.mark.parametrize(
    "label,add,match",
    [
        ("dot-dot", _file("demo-edge/../../escaped.txt"), "'..'"),
        ("absolute", _file("/tmp/edgepack-escaped.txt"), "absolute"),
        ("symlink", _link("demo-edge/model/link", "/etc/passwd"), "link"),
        ("hardlink", _link("demo-edge/model/hard", "demo-edge/check.py", tarfile.LNKTYPE), "link"),
        ("device", _device("demo-edge/dev"), "not a regular file"),
        ("unlisted", _file("demo-edge/model/extra.bin"), "not in the manifest"),
        ("second root", _file("other/file.txt"), "one top-level directory"),
    ],
)
def test_unsafe_tarballs_are_refused_and_write_nothing(tmp_path, label, add, match):
    _, tarball, _ = make_bundle(tmp_path)
    evil = _evil_tar(tmp_path, tarball, add)
    into = tmp_path / "fresh"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(VerificationError, match=match):
        unpack(evil, into)
    assert not into.exists() or not any(into.iterdir())
    assert set(tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_size_mismatch_is_refused(tmp_path):
    path, _, manifest = make_bundle(tmp_path)
    evil = tmp_path / "resized.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        for f in path.rglob("*"):
            data = f.read_bytes() if f.is_file() else None
            arc = f"demo-edge/{f.relative_to(path).as_posix()}"
            if f.name == "weights.bin":
                data = data + b"more"
            info = tarfile.TarInfo(arc)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    with pytest.raises(VerificationError, match="weights.bin has 1004 bytes"):
        unpack(evil, tmp_path / "fresh")


def _run_check(path):
    return subprocess.run(
        [sys.executable, str(path / "check.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "label,tamper,match",
    [
        (
            "flipped byte",
            lambda p: _flip(p / "model" / "weights.bin"),
            "file changed: model/weights.bin",
        ),
        (
            "missing",
            lambda p: (p / "model" / "weights.bin").unlink(),
            "missing file: model/weights.bin",
        ),
        (
            "extra",
            lambda p: (p / "model" / "extra.txt").write_text("x"),
            "extra file not in the manifest: model/extra.txt",
        ),
        ("edited manifest", lambda p: _edit_manifest(p), "manifest.json was modified"),
    ],
)
def test_check_integrity_errors_before_loading(tmp_path, label, tamper, match):
    path, _, _ = make_bundle(tmp_path)
    tamper(path)
    result = _run_check(path)
    assert result.returncode == 2, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "ERROR" and match in report["error"]


def _flip(path):
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 2
    (path / "manifest.json").write_text(json.dumps(manifest))


# --- a truncated or corrupt tarball ---------------------------------------------------------


def _damaged(tmp_path, tarball, how):
    data = tarball.read_bytes()
    if how.endswith("%"):
        data = data[: len(data) * int(how[:-1]) // 100]
    elif how == "trailer cut":
        data = data[:-8]  # CRC32 and length of the gzip member
    elif how == "trailer half cut":
        data = data[:-3]
    elif how == "flipped byte":
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        data = bytes(data)
    elif how == "empty":
        data = b""
    damaged = tmp_path / "download" / "demo-edge.tar.gz"
    damaged.parent.mkdir()
    damaged.write_bytes(data)
    return damaged


DAMAGE = ["10%", "50%", "99%", "trailer cut", "trailer half cut", "flipped byte", "empty"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_tarball_is_refused_and_leaves_nothing(tmp_path, how):
    _, tarball, _ = make_bundle(tmp_path)
    damaged = _damaged(tmp_path, tarball, how)
    into = tmp_path / "fresh"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(VerificationError, match="truncated or corrupt") as caught:
        unpack(damaged, into)
    assert str(damaged) in str(caught.value) and "\n" not in str(caught.value)
    assert set(tmp_path.rglob("*")) == before


def test_a_tarball_without_a_listed_file_is_incomplete(tmp_path):
    _, tarball, _ = make_bundle(tmp_path)
    short = tmp_path / "short.tar.gz"
    with tarfile.open(tarball) as src, tarfile.open(short, "w:gz") as dst:
        for m in src.getmembers():
            if not m.name.endswith("weights.bin"):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    with pytest.raises(VerificationError, match="lacks 1 file.*model/weights.bin"):
        unpack(short, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


UNPACK_WITH_A_FULL_DISK = r"""
import resource, signal, sys
from pathlib import Path
from edgepack.bundle.unpack import unpack
from edgepack.errors import VerificationError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    unpack(Path(sys.argv[1]), Path(sys.argv[2]))
except VerificationError as exc:
    print(exc)
"""


def test_a_write_that_fails_midway_removes_what_was_unpacked(tmp_path):
    _, tarball, _ = make_bundle(tmp_path)
    into = tmp_path / "fresh"
    result = subprocess.run(
        [sys.executable, "-c", UNPACK_WITH_A_FULL_DISK, str(tarball), str(into)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"cannot unpack {tarball} into {into}" in result.stdout
    assert "truncated" not in result.stdout  # the disk is at fault, not the download
    assert not into.exists()


@pytest.mark.parametrize("how", ["10%", "50%", "99%", "trailer cut"])
def test_verify_says_a_truncated_tarball_is_truncated(tmp_path, how):
    _, tarball, _ = make_bundle(tmp_path)
    damaged = _damaged(tmp_path, tarball, how)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    started = time.monotonic()
    result = run_cli("verify", str(damaged), env={"TMPDIR": str(scratch)})
    elapsed = time.monotonic() - started
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and str(damaged) in lines[0], result.stderr
    assert "truncated or corrupt" in lines[0] and "aborted" not in result.stderr
    assert elapsed < 30
    assert not list(scratch.iterdir()), "verify left its scratch directory behind"


def test_an_eof_error_inside_a_command_is_an_internal_error(tmp_path, monkeypatch, capsys):
    """click makes Abort ("aborted", 130) of an EOFError; one from a defect must read as one."""
    import edgepack.bundle.verify
    from edgepack.cli.main import main

    def broken(*args, **kwargs):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(edgepack.bundle.verify, "verify", broken)
    with pytest.raises(SystemExit) as exited:
        main(["verify", str(tmp_path)])
    err = capsys.readouterr().err
    assert exited.value.code == 3, err
    assert "internal error: EOFError" in err and "aborted" not in err
