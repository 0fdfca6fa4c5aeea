"""A chat template is input: one that reaches for Python's internals stops the build in one
line, runs nothing, and would not run on the device's chat runtime either."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration  # the CLI in a fresh interpreter, the default model

PAYLOAD = "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}"


@pytest.fixture
def hostile_model(tmp_path, default_model):
    """The default model with the payload as its chat template (weights linked, not copied)."""
    model = tmp_path / "hostile"
    model.mkdir()
    for f in default_model.iterdir():
        if f.name != "tokenizer_config.json":
            (model / f.name).symlink_to(f)
    config = json.loads((default_model / "tokenizer_config.json").read_text())
    marker = tmp_path / "pwned"
    config["chat_template"] = PAYLOAD.replace("{marker}", str(marker))
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return model, marker


def test_a_hostile_chat_template_stops_the_build_in_one_line(hostile_model, tmp_path):
    model, marker = hostile_model
    out = tmp_path / "bundles"
    start = time.monotonic()
    result = run_cli("build", "--model", str(model), "--target", "edge-4gb", "--out", str(out),
                     "--no-resolve")  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the chat template in {model / 'tokenizer_config.json'}")
    assert "SecurityError" in last and "internal error" not in result.stderr
    assert not marker.exists() and not out.exists()
    assert time.monotonic() - start < 60


def test_the_devices_chat_runtime_renders_templates_in_a_sandbox(tmp_path):
    """llama-cpp-python's chat formatter (what a device calls to chat with a GGUF) renders the
    template in jinja2's sandbox too: the payload raises, and nothing runs."""
    from jinja2.exceptions import SecurityError
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    marker = tmp_path / "pwned"
    formatter = Jinja2ChatFormatter(
        template=PAYLOAD.replace("{marker}", str(marker)), eos_token="</s>", bos_token="<s>"
    )
    with pytest.raises(SecurityError):
        formatter(messages=[{"role": "user", "content": "hi"}])
    assert not marker.exists()
