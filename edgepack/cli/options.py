"""The options several commands share, the model they name, and how a command prints JSON."""

from __future__ import annotations

import json

import click

MODEL_HELP = "Hugging Face model directory (default: the embedded SmolLM2-135M-Instruct)."


def model_options(fn):
    fn = click.option("--model", "model", metavar="PATH", help=MODEL_HELP)(fn)
    fn = click.option(
        "--allow-pickle",
        is_flag=True,
        help="Read .bin/.pt checkpoints (torch.load with weights_only=True) when no safetensors.",
    )(fn)
    fn = click.option(
        "--trust-remote-code",
        is_flag=True,
        help="Allow a model that needs its own Python code (config.json auto_map).",
    )(fn)
    return fn


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(fn)


def model_facts(model, allow_pickle, trust_remote_code):
    from ..export.support import inspect_model

    if model is None:
        from ..model.default import default_model_dir

        model = default_model_dir()
    return inspect_model(model, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)


def emit(data) -> None:
    click.echo(json.dumps(data, indent=2))
