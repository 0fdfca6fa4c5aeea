"""Honest timings: every core, cold prompts, and no state carried between generate calls."""

from __future__ import annotations

import os

import pytest

from edgepack.bundle.kit import devicekit, load_runner

pytestmark = pytest.mark.integration

VARIANTS = [("gguf", "q8_0", "llama.cpp"), ("openvino", "int8", "openvino"),
            ("onnx", "int8", "onnxruntime")]


@pytest.mark.parametrize("fmt,precision,runtime", VARIANTS)
def test_runner_uses_every_allowed_core_and_keeps_no_state(
    default_model, exports, fmt, precision, runtime
):
    artifact = exports.get(default_model, fmt, precision)
    runner = load_runner(runtime, artifact.path)
    assert runner.threads == len(os.sched_getaffinity(0))
    a, b = devicekit().cold_prompts(runner.tokenize, 2, 128)
    assert a[0] != b[0] and len(a) == len(b) == 128
    first = runner.generate(a, 12, stop_at_eos=False)
    other = runner.generate(b, 12, stop_at_eos=False)
    again = runner.generate(a, 12, stop_at_eos=False)
    # the same prompt after another one gives the same tokens: nothing left over from the last
    assert again.tokens == first.tokens
    assert other.tokens != first.tokens
    # and the runtime processed the whole prompt each time (openvino-genai says so itself)
    for gen in (first, other, again):
        assert gen.prompt_tokens_processed == 128


def test_threads_can_be_set(default_model, exports):
    artifact = exports.get(default_model, "gguf", "q8_0")
    assert load_runner("llama.cpp", artifact.path, threads=1).threads == 1

