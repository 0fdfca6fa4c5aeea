"""Publishing a bundle survives a crash at any step: a complete bundle, old or new, is always
in place, and the next build finishes or undoes what a dead one left (no backend needed)."""

import os
import shutil
import subprocess
import sys

import pytest

from edgepack.bundle import publish as bundle
from edgepack.bundle.kit import check_module, kit_dir
from edgepack.bundle.publish import (
    clean_leftovers,
    exchange,
    publish,
    shared_kit_files,
    staging_dir,
    write_manifest,
)
from edgepack.bundle.unpack import unpack

CRASHING_PUBLISH = r"""
import os, sys
from pathlib import Path
from edgepack.bundle import publish as bundle
from edgepack.bundle.kit import kit_dir

out, crash_at, mode, step_kind = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dest = out / "demo-edge"
staging = bundle.staging_dir(dest)
(staging / "model").mkdir()
(staging / "model" / "weights.bin").write_bytes(b"\x02" * 3000)
for kit in bundle.shared_kit_files():
    (staging / kit).write_bytes((kit_dir() / kit).read_bytes())
bundle.write_manifest(staging, {"schema_version": 1, "runtime": {"name": "x"}, "label": "new"})

calls = [0]

def dying(fn):
    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(17)  # no finally, no atexit: as a kill -9 would
        return fn(*args, **kwargs)
    return step

if mode == "fallback":
    bundle.exchange = lambda a, b: False
if step_kind == "tar-member":
    bundle._plain = dying(bundle._plain)
else:
    os.rename, os.replace = dying(os.rename), dying(os.replace)
    bundle.exchange, bundle._remove = dying(bundle.exchange), dying(bundle._remove)
bundle.publish(staging, dest)
"""


def _publish_and_die(out, crash_at, mode, step_kind="fs"):
    return subprocess.run(
        [sys.executable, "-c", CRASHING_PUBLISH, str(out), str(crash_at), mode, step_kind],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _complete_label(path):
    """The label of the complete bundle at path (every file at its size and sha256)."""
    check = check_module()
    manifest = check.load_manifest(str(path))
    check.verify_files(str(path), manifest)
    return manifest["label"]


def _old_bundle(tmp_path):
    dest = tmp_path / "out" / "demo-edge"
    staging = staging_dir(dest)
    (staging / "model").mkdir()
    (staging / "model" / "weights.bin").write_bytes(b"\x01" * 1000)
    for kit in shared_kit_files():
        (staging / kit).write_bytes((kit_dir() / kit).read_bytes())
    write_manifest(staging, {"schema_version": 1, "runtime": {"name": "x"}, "label": "old"})
    return publish(staging, dest)


def _exchange_works(tmp_path):
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir()
    b.mkdir()
    (a / "x").touch()
    swapped = exchange(a, b)
    shutil.rmtree(a)
    shutil.rmtree(b)
    return swapped


def _recover(out, dest, how):
    if how == "staging_dir":  # the next build starts
        shutil.rmtree(staging_dir(dest))
    else:  # verify, or anything else that reads the destination
        clean_leftovers(out)


@pytest.mark.parametrize("mode", ["exchange", "fallback", "first publish"])
def test_a_crash_at_any_step_of_publish_leaves_a_complete_bundle(tmp_path, mode):
    if mode == "exchange" and not _exchange_works(tmp_path):
        pytest.skip("this file system has no atomic exchange (renameat2 RENAME_EXCHANGE)")
    out = tmp_path / "out"
    dest, tarball = out / "demo-edge", out / "demo-edge.tar.gz"
    if mode != "first publish":
        _old_bundle(tmp_path)
    seen, windows = [], 0
    for crash_at in range(1, 20):
        result = _publish_and_die(out, crash_at, mode)
        if result.returncode == 0:
            break
        assert result.returncode == 17, result.stderr
        if mode == "exchange":  # at every instant DEST is one whole bundle
            assert _complete_label(dest) in ("old", "new")
        windows += not dest.exists()
        _recover(out, dest, "staging_dir" if crash_at % 2 else "clean_leftovers")
        assert not list(out.glob(".edgepack-*")), f"leftovers after a crash at step {crash_at}"
        if mode == "first publish" and not dest.exists():
            assert not tarball.exists()
            seen.append(None)
            continue
        label = _complete_label(dest)
        fresh = unpack(tarball, tmp_path / f"fresh-{crash_at}")
        assert _complete_label(fresh) == label, "directory and tarball must be one bundle"
        seen.append(label)
        if label == "new":  # start the next crash from the state before publish again
            shutil.rmtree(dest)
            tarball.unlink()
            if mode != "first publish":
                _old_bundle(tmp_path)
    else:
        pytest.fail("publish never completed")
    assert _complete_label(dest) == "new"
    assert not list(out.glob(".edgepack-*"))
    before = None if mode == "first publish" else "old"
    assert before in seen and "new" in seen, seen  # crashes before and after the swap
    if mode == "fallback":
        assert windows, "no crash fell between the two renames"
    elif mode == "exchange":
        assert not windows


def test_a_crash_while_writing_the_tarball_keeps_the_old_bundle(tmp_path):
    old_dest, old_tarball = _old_bundle(tmp_path)
    old_bytes = old_tarball.read_bytes()
    result = _publish_and_die(old_dest.parent, 3, "exchange", "tar-member")
    assert result.returncode == 17, result.stderr
    assert list(old_dest.parent.glob(".edgepack-staging-*.tar.gz")), "a half-written tarball"
    clean_leftovers(old_dest.parent)
    assert not list(old_dest.parent.glob(".edgepack-*"))
    assert _complete_label(old_dest) == "old"
    assert old_tarball.read_bytes() == old_bytes


def test_a_failed_rename_is_undone_by_the_next_build(tmp_path, monkeypatch):
    dest, tarball = _old_bundle(tmp_path)
    staging = staging_dir(dest)
    (staging / "new.txt").write_text("new")
    write_manifest(staging, {"schema_version": 1, "label": "new"})
    monkeypatch.setattr(bundle, "exchange", lambda a, b: False)
    real_rename = os.rename

    def rename(src, dst):
        if str(src) == str(staging):
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        publish(staging, dest)
    assert not dest.exists() and list(dest.parent.glob(".edgepack-retired-*"))
    monkeypatch.setattr(os, "rename", real_rename)
    shutil.rmtree(staging_dir(dest))  # the next build starts here
    assert _complete_label(dest) == "old"
    assert _complete_label(unpack(tarball, tmp_path / "fresh")) == "old"
