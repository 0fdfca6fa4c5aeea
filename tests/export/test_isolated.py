"""OpenVINO and ONNX exports run in a child process: the calling process never holds the model,
and a failure in the child comes back as one error."""

import json
import os
import subprocess
import sys

import pytest

from edgepack.errors import ExportError
from edgepack.export import isolated
from edgepack.export.support import inspect_model
from tests.conftest import ROOT, config_dir


def test_a_failure_in_the_child_comes_back_as_one_export_error(tmp_path):
    model = config_dir("smollm2-135m")
    steps = []
    with pytest.raises(ExportError, match="no precision 'nope'") as failed:
        isolated.export("openvino", model, inspect_model(model), "nope", tmp_path, steps.append)
    assert "\n" not in str(failed.value) and not steps
    assert not any(tmp_path.iterdir())  # nothing written


CODE = """
import json, sys
from pathlib import Path
import torch, transformers  # what a build has imported before its exports
from edgepack.export.export_cache import export_cached
from edgepack.export.support import inspect_model

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

model = Path(sys.argv[1])
# the facts first: with a new cache, the exporters' support tables are read once by importing
# optimum, openvino and the others (~170 MB, whatever the model)
facts = inspect_model(model)
before = status("VmHWM:")
artifact = export_cached(model, facts, "openvino", "int8", Path(sys.argv[2]), print)
print(json.dumps({"grew": status("VmHWM:") - before, "files": len(artifact.files())}))
"""


@pytest.mark.integration
def test_an_openvino_export_leaves_the_calling_process_without_the_model(default_model, tmp_path):
    # in this process, optimum would hold the fp32 model (538 MB) and its traced graph
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CODE, str(default_model), str(tmp_path / "cache")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["files"] > 0
    assert result["grew"] < 150e6, result  # the model went with the child


TWO_PRECISIONS = """
import json, os, sys
from pathlib import Path
from edgepack.cache import cache_root
from edgepack.export import isolated
from edgepack.export.support import inspect_model

model, out = Path(sys.argv[1]), Path(sys.argv[2])
facts = inspect_model(model)
first = isolated.export("onnx", model, facts, "int8", out / "int8", print)
second = isolated.export("onnx", model, facts, "int4", out / "int4", print)
kept = [p.name for p in (cache_root() / "work").glob(f".edgepack-onnx-base-{os.getpid()}-*")]
print(json.dumps({"first": first.details["base_reused"], "second": second.details["base_reused"],
                  "base_s": [first.details["base_export_s"], second.details["base_export_s"]],
                  "kept": kept}))
"""


@pytest.mark.integration
def test_onnx_exports_in_children_share_one_fp32_base_for_the_life_of_their_caller(
    default_model, tmp_path
):
    # each child used to export the fp32 base again: ~20 s of the default model's ~22 s export
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EDGEPACK_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", TWO_PRECISIONS, str(default_model), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["first"] is False and result["second"] is True, result
    assert result["base_s"][0] == result["base_s"][1]
    assert len(result["kept"]) == 1, result  # while the caller lives, one base
    assert not list((cache / "work").glob(".edgepack-onnx-base-*"))  # gone when it exited
