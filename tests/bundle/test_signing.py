"""Signed bundles on synthetic directories: real keys, real model-signing, no model."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from edgepack.bundle.kit import signature_module
from edgepack.bundle.signing import check_private_key, keygen, sign
from edgepack.errors import EdgepackError


@pytest.fixture
def keys(tmp_path):
    return keygen(tmp_path / "keys")


@pytest.fixture
def bundle(tmp_path, keys):
    root = tmp_path / "bundle"
    (root / "model").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"quality": {"retention": 0.963}}))
    (root / "model" / "model.gguf").write_bytes(os.urandom(4096))
    (root / "check.py").write_text("print('check')\n")
    sign(root, keys[0])
    return root


def refused(root, pub) -> str:
    with pytest.raises(signature_module().SignatureError) as exc:
        signature_module().verify_bundle(str(root), str(pub))
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(keys):
    key, pub = keys
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    check_private_key(key)
    with pytest.raises(EdgepackError, match="never overwrites"):
        keygen(key.parent)
    with pytest.raises(EdgepackError, match="edgepack keygen"):
        check_private_key(pub)


def test_an_untouched_signed_bundle_verifies_and_what_running_it_writes_is_not_covered(
    bundle, keys
):
    verify = signature_module().verify_bundle
    verify(str(bundle), str(keys[1]))
    (bundle / "__pycache__").mkdir()
    (bundle / "__pycache__" / "check.cpython-311.pyc").write_bytes(b"\0")
    (bundle / "venv" / "bin").mkdir(parents=True)
    (bundle / "venv" / "bin" / "python").write_text("")
    verify(str(bundle), str(keys[1]))


def test_a_forged_rehashed_manifest_is_refused(bundle, keys):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["quality"]["retention"] = 0.999  # the forger recomputes every digest it likes
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert refused(bundle, keys[1]).endswith("changed since it was signed: manifest.json")


@pytest.mark.parametrize(
    "change,words",
    [
        ("swap", "changed since it was signed: model/model.gguf"),
        ("extra", "not covered by the signature: evil.py"),
        ("missing", "signed but missing: check.py"),
        ("unsigned", "the bundle is not signed (no model.sig)"),
        ("other key", "signed with another key than this public key"),
    ],
)
def test_every_other_change_is_refused_in_one_line(bundle, keys, tmp_path, change, words):
    pub = keys[1]
    if change == "swap":
        (bundle / "model" / "model.gguf").write_bytes(os.urandom(4096))
    elif change == "extra":
        (bundle / "evil.py").write_text("import os\n")
    elif change == "missing":
        (bundle / "check.py").unlink()
    elif change == "unsigned":
        (bundle / "model.sig").unlink()
    else:
        pub = keygen(tmp_path / "other")[1]
    assert words in refused(bundle, pub)


def test_a_missing_public_key_is_named(bundle, tmp_path):
    assert "no such file" in refused(bundle, tmp_path / "nope.pub")
    shutil.rmtree(bundle)
