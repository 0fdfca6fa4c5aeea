"""Golden outputs that survive another machine: checked teacher-forced, near-ties tolerated.

The OpenVINO int4_mixed IR of the default model sits on near-ties (its first answer token to
the capital question: 'La' 23.202 against 'L' 23.156), and openvino-genai and the plain IR
already order them differently here. Run through optimum-intel, a different execution path
from the kit's, the IR must pass the golden check the build recorded; with a perturbed weight
it must fail it."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgepack.bundle.kit import devicekit, load_runner
from edgepack.export.support import inspect_model
from edgepack.measure.golden import golden_outputs as _golden

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def int4_mixed(default_model, exports):
    artifact = exports.get(default_model, "openvino", "int4_mixed")
    runner = load_runner("openvino", artifact.path)
    golden = _golden(runner, default_model, inspect_model(default_model))
    return artifact, golden


def optimum_logits(model_dir, ids: list[int]) -> np.ndarray:
    import torch
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(
        model_dir, ov_config={"INFERENCE_PRECISION_HINT": "f32"}, compile=True
    )
    with torch.inference_mode():
        out = model(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out.logits[0].float().numpy()


def verdicts(model_dir, golden) -> list[dict]:
    kit = devicekit()
    return [
        kit.golden_check(optimum_logits(model_dir, g["prompt_ids"] + g["tokens"]), g)
        for g in golden
    ]


def test_build_records_margins_and_the_capital_answer_starts_on_a_near_tie(int4_mixed):
    _, golden = int4_mixed
    for g in golden:
        assert len(g["margins"]) == len(g["tokens"]) and all(m >= 0 for m in g["margins"])
    kit = devicekit()
    assert any(m < kit.CLEAR_MARGIN for g in golden for m in g["margins"]), "no near-tie seen"


def test_optimum_intel_passes_the_golden_check(int4_mixed):
    artifact, golden = int4_mixed
    results = verdicts(artifact.path, golden)
    assert all(v["pass"] for v in results), results
    assert sum(v["clear_steps"] for v in results) > 40  # most steps are clear and were checked


def test_a_perturbed_weight_fails_the_golden_check(int4_mixed, tmp_path):
    artifact, golden = int4_mixed
    for f in artifact.path.iterdir():
        if f.is_file():
            shutil.copyfile(f, tmp_path / f.name)
    root = ET.parse(tmp_path / "openvino_model.xml").getroot()
    scales = [
        layer.find("data")
        for layer in root.iter("layer")
        if layer.get("type") == "Const"
        and "down_proj" in (layer.get("name") or "")
        and layer.find("data") is not None
        and layer.find("data").get("element_type") in ("f16", "f32")
    ]
    assert scales, "no down_proj scale constants found in the IR"
    with open(tmp_path / "openvino_model.bin", "r+b") as fh:
        for data in scales[: max(1, len(scales) // 3)]:
            dtype = np.float16 if data.get("element_type") == "f16" else np.float32
            offset, size = int(data.get("offset")), int(data.get("size"))
            fh.seek(offset)
            values = np.frombuffer(fh.read(size), dtype=dtype) * dtype(4)
            fh.seek(offset)
            fh.write(values.astype(dtype).tobytes())
    results = verdicts(tmp_path, golden)
    assert not all(v["pass"] for v in results)
    assert sum(len(v["failed_steps"]) for v in results) >= 3
