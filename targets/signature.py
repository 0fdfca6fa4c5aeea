"""A bundle's signature: who made it, not only that it is intact.

The manifest's hashes prove a bundle is whole; anyone who rewrites a file can rewrite its hash.
A signed bundle carries model.sig, a Sigstore bundle (DSSE envelope over an in-toto statement
listing every file's SHA-256) made by the OpenSSF model-signing library with the builder's
elliptic-curve private key (`edgepack build --sign KEY`). `check.py --public-key PUB` verifies
it before it reads anything else: a file the signature does not cover, a file that differs, a
missing or malformed model.sig, or another key's signature stops the check in one line.

Offline: key-based signing and verification need no network. On the device this needs the
`model-signing` and `pyopenssl` packages (a signed bundle's requirements.txt lists them), not
edgepack. Python's __pycache__ directories, which running the kit writes, and the venv the
bundle README creates are not covered, as check.py's file check skips them.
"""

from __future__ import annotations

import os
import re

SIGNATURE = "model.sig"
# what running the kit writes (__pycache__) and the environment the bundle README makes in it
# (venv), as check.py's file check ignores them
IGNORED = ("__pycache__", "venv", SIGNATURE)
PACKAGES = ("model-signing", "pyopenssl")  # model-signing 1.1 imports OpenSSL undeclared


class SignatureError(Exception):
    """The bundle is unsigned, or its signature does not verify with the given key."""


def _hashing(root: str):
    from model_signing import hashing

    config = hashing.Config()
    config.add_ignored_paths(model_path=root, paths=list(IGNORED))
    return config


def _library():
    try:
        import model_signing  # noqa: F401
        from model_signing import signing, verifying
    except ImportError as exc:
        raise SignatureError(
            f"verifying a signature needs the model-signing library ({exc}): "
            f"pip install {' '.join(PACKAGES)} (a signed bundle's requirements.txt lists them)"
        ) from None
    return signing, verifying


def sign_bundle(root: str, private_key: str) -> str:
    """Sign every file under root (but IGNORED) into root/model.sig; its path."""
    signing, _ = _library()
    path = os.path.join(root, SIGNATURE)
    config = signing.Config().use_elliptic_key_signer(private_key=private_key)
    config.set_hashing_config(_hashing(root))
    config.sign(root, path)
    return path


def verify_bundle(root: str, public_key: str) -> None:
    """Raise SignatureError, in one line, unless root/model.sig covers every file of root with
    its current content and was made with the private key of public_key."""
    if not os.path.isfile(public_key):
        raise SignatureError(f"public key {public_key}: no such file")
    path = os.path.join(root, SIGNATURE)
    if not os.path.isfile(path):
        raise SignatureError(f"the bundle is not signed (no {SIGNATURE}); refusing it")
    _, verifying = _library()
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=public_key)
        config.set_hashing_config(_hashing(root))
        config.verify(root, path)
    except Exception as exc:  # noqa: BLE001 - every failure to verify refuses the bundle
        raise SignatureError(f"signature check failed: {_reason(str(exc))}") from None


def _reason(text: str) -> str:
    """model-signing's message, in words and without raw digests."""
    changed = re.findall(r"Hash mismatch for \\?'([^'\\]+)\\?'", text)
    extra = re.search(r"Extra files found in model '[^']*': ([^\"\]]+)", text)
    missing = re.search(r"Missing files in model '[^']*': ([^\"\]]+)", text)
    parts = []
    if changed:
        parts.append(f"changed since it was signed: {', '.join(changed)}")
    if extra:
        parts.append(f"not covered by the signature: {extra.group(1).strip()}")
    if missing:
        parts.append(f"signed but missing: {missing.group(1).strip()}")
    if "Key mismatch" in text:
        parts.append("signed with another key than this public key")
    if parts:
        return "; ".join(parts)
    reason = " ".join(text.split())
    return reason if len(reason) <= 300 else reason[:300] + "..."
