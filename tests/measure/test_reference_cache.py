"""The fp32 reference cache under builds running side by side: one computes it while the others
wait on its lock, then read it (a fixed temporary name shared by processes failed to rename)."""

import os
import subprocess
import sys
import time

import pytest

from edgepack.cache import content_key, locked
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CODE = """
import sys
from pathlib import Path
from edgepack.cache import cache_root
from edgepack.export.support import inspect_model
from edgepack.measure.reference import reference
model = Path(sys.argv[1])
ref = reference(model, inspect_model(model), cache_root())
print(len(ref.agreement_top1))
"""


def _run(default_model, cache):
    return subprocess.Popen(
        [sys.executable, "-c", CODE, str(default_model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGEPACK_CACHE": str(cache)},
        cwd=ROOT,
    )


def test_a_build_waits_for_the_reference_another_is_computing(default_model, tmp_path):
    cache = tmp_path / "cache"
    entry = cache / "references" / f"{content_key(default_model)}.npz"
    with locked(entry.with_suffix(".lock")):  # another process is computing it
        waiting = _run(default_model, cache)
        time.sleep(20)  # ample for it to import, load the model and compute, were it not waiting
        assert waiting.poll() is None, "it computed the reference beside the other process"
    out, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, err[-2000:]
    assert entry.is_file() and int(out) > 0
    # a second process reads the cached entry
    again = _run(default_model, cache)
    out2, err2 = again.communicate(timeout=600)
    assert again.returncode == 0 and out2 == out, err2[-2000:]
    left = sorted(p.name for p in entry.parent.iterdir())
    assert left == sorted([entry.name, f"{entry.stem}.lock"])  # no temporary file behind
