"""A signed build, end to end: check.py and verify with the public key, and a forged copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    root = tmp_path_factory.mktemp("signed")
    keys = run_cli("keygen", "--out", str(root / "keys"), "--json")
    assert keys.returncode == 0, keys.stderr
    pair = json.loads(keys.stdout)
    out = root / "bundles"
    r = run_cli(
        "build", "--target", "edge-4gb", "--out", str(out), "--format", "gguf",
        "--precision", "q8_0", "--candidates", "1", "--no-resolve",
        "--sign", pair["private_key"], "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (bundle,) = json.loads(r.stdout)["bundles"]
    return Path(bundle["path"]), Path(bundle["tarball"]), Path(pair["public_key"]), root


def check(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(bundle / "check.py"), "--repetitions", "1", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_signed_bundle_passes_its_check_with_the_public_key(signed):
    bundle, tarball, pub, _ = signed
    assert (bundle / "model.sig").is_file()
    requirements = (bundle / "requirements.txt").read_text()
    assert "model-signing==" in requirements and "pyopenssl==" in requirements
    assert "--public-key" in (bundle / "README.md").read_text()
    r = check(bundle, "--public-key", str(pub))
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    with tarfile.open(tarball) as tf:  # the tarball carries the same signature
        assert f"{bundle.name}/model.sig" in tf.getnames()
    r = run_cli("verify", str(tarball), "--public-key", str(pub), "--repetitions", "1")
    assert r.returncode == 0, r.stderr


def test_a_forged_rehashed_copy_fails_in_one_line(signed):
    bundle, _, pub, root = signed
    forged = root / "forged"
    shutil.copytree(bundle, forged)
    sys.path.insert(0, str(forged))
    try:
        import check as kit_check  # the bundle's own digest, as a forger would use it
    finally:
        sys.path.remove(str(forged))
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["quality"]["retention"] = 0.999
    manifest["manifest_sha256"] = kit_check.manifest_digest(manifest)
    (forged / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    assert check(forged).returncode == 0  # the hashes alone cannot tell
    r = check(forged, "--public-key", str(pub))
    assert r.returncode == 2 and r.stdout.strip().count("\n") == 0, r.stdout
    assert "changed since it was signed: manifest.json" in r.stdout
    tarball = root / "forged.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(forged, arcname="forged")
    r = run_cli("verify", str(tarball), "--public-key", str(pub))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: signature")
