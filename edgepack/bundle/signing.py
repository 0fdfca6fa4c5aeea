"""Signing keys and signed bundles, on the build side (the kit's targets/signature.py verifies).

`edgepack keygen --out DIR` writes an elliptic-curve (NIST P-256) key pair:
DIR/edgepack-signing.key (PKCS#8 PEM, mode 0600, never leaves the build machine) and
DIR/edgepack-signing.pub (the public half a fleet installs on its devices). `edgepack build
--sign KEY` signs each bundle after its manifest is written and before it is published, so the
directory and the tarball carry the same model.sig; the bundle's requirements.txt then lists
what check.py needs to verify it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import EdgepackError
from .install import host_version
from .kit import signature_module

KEY_NAME = "edgepack-signing.key"
PUB_NAME = "edgepack-signing.pub"


def keygen(out: Path) -> tuple[Path, Path]:
    """A new key pair in out; refuses to overwrite one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_path, pub_path = out / KEY_NAME, out / PUB_NAME
    for path in (key_path, pub_path):
        if path.exists():
            raise EdgepackError(
                f"{path} exists: keygen never overwrites a key; choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path.write_bytes(public)
    return key_path, pub_path


def check_private_key(path: Path) -> None:
    """A one-line error unless path holds an unencrypted elliptic-curve private key (checked
    before a build does any work)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EdgepackError(
            f"--sign {path}: not a readable PEM private key ({exc}); make one with "
            "`edgepack keygen --out DIR`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EdgepackError(
            f"--sign {path}: an elliptic-curve key is needed (model-signing's key-based "
            "signing); make one with `edgepack keygen --out DIR`"
        )


def verification_requirements() -> list[str]:
    """What a device installs to verify a signature: model-signing and pyopenssl, at this
    host's versions."""
    versions = {package: host_version(package) for package in signature_module().PACKAGES}
    return [f"{p}=={v}" if v else p for p, v in versions.items()]


def prepare_signed(root: Path) -> None:
    """Before the manifest of a bundle that will be signed: requirements.txt gains what check.py
    needs to verify it, and README.md says how."""
    requirements = root / "requirements.txt"
    lines = requirements.read_text().splitlines() if requirements.is_file() else []
    have = {re.split(r"[=<>!~ ;\[]", line)[0].strip().lower() for line in lines}
    missing = [r for r in verification_requirements() if r.split("==")[0].lower() not in have]
    requirements.write_text("\n".join([*lines, *missing]) + "\n")
    readme = root / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    readme.write_text(text.rstrip() + "\n\n" + SIGNED_README)


SIGNED_README = """## Signature

This bundle is signed: `model.sig` (a Sigstore bundle made with the OpenSSF model-signing library)
covers every file but `__pycache__/` and `venv/`. Check it with the builder's public key before
anything else is read:

    venv/bin/python check.py --public-key edgepack-signing.pub

An unsigned bundle, a file that changed or that the signature does not cover, or another key's
signature stops the check in one line (exit 2). Verification is offline.

Keep the public key apart from the bundles: install it on each device with the device's own
configuration (an image, a configuration-management role), never beside a bundle that arrives
over the network, where whoever could change the bundle could change the key as well. The private
key stays on the build machine (`edgepack keygen` writes it with mode 0600).
"""


def sign(root: Path, key: Path) -> Path:
    """model.sig over every file of the staged bundle root."""
    return Path(signature_module().sign_bundle(str(root), str(key)))
