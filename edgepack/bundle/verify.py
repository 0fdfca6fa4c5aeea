"""`edgepack verify`: safe unpack of a bundle tarball, then the bundle's own check (the same
subprocess a build runs on each staged bundle)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..device.profiles import Profile
from ..errors import VerificationError
from ..liblog import say
from .publish import clean_leftovers
from .run_check import run_bundle_check
from .unpack import unpack


def verify(
    bundle: Path,
    profile: Profile | None = None,
    keep: bool = False,
    check_args: list[str] | None = None,
    emulate: str | bool = False,
    cache: Path | None = None,
    say=say,
) -> dict:
    """Run the bundle's check.py (after unpacking a tarball into a fresh directory).

    The bundle's directory is first repaired if a build died while publishing there (a retired
    bundle back in place, a finished tarball moved in: see publish.py). The scratch directory is
    kept with --keep only when it holds a bundle unpacked whole; otherwise it is removed.
    emulate: run the install and the check in an arm64 root under qemu (emulate.py), with the
    profile's CPU model, or the qemu CPU named by a string."""
    if bundle.parent.is_dir():
        clean_leftovers(bundle.parent)
    if not bundle.exists():
        raise VerificationError(f"{bundle} does not exist")
    scratch = Path(tempfile.mkdtemp(prefix="edgepack-verify-"))
    unpacked = False
    try:
        if bundle.is_dir():
            root = bundle
        elif bundle.name.endswith((".tar.gz", ".tgz")):
            root = unpack(bundle, scratch / "bundle")
            unpacked = True
        else:
            raise VerificationError(f"{bundle} is neither a bundle directory nor a .tar.gz")
        if not (root / "check.py").is_file():
            raise VerificationError(f"{root} has no check.py: not an edgepack bundle")
        extra = list(check_args or [])
        if emulate:
            from ..cache import cache_root
            from .emulate import emulated_check

            cpu = emulate if isinstance(emulate, str) else None
            budgets = profile.to_dict() if profile is not None else None
            report = emulated_check(root, cache or cache_root(), cpu, budgets, extra, say)
            report["unpacked_to"] = str(root) if keep and unpacked else None
            return report
        if profile is not None:
            budget_file = scratch / "profile.json"
            budget_file.write_text(json.dumps(profile.to_dict()))
            extra += ["--profile", str(budget_file)]
        report = run_bundle_check(root, extra)
        report["unpacked_to"] = str(root) if keep and unpacked else None
        return report
    finally:
        if not (keep and unpacked):
            shutil.rmtree(scratch, ignore_errors=True)
