"""`edgepack inspect`: model facts from config.json and safetensors headers."""

from __future__ import annotations

import click

from .options import emit, json_option, model_facts, model_options


@click.command()
@model_options
@json_option
def inspect(model, allow_pickle, trust_remote_code, as_json):
    """Model facts from config.json and safetensors headers, without loading weights."""
    from .tables import facts_text

    facts = model_facts(model, allow_pickle, trust_remote_code)
    if as_json:
        emit(facts.to_dict())
    else:
        click.echo(facts_text(facts))
