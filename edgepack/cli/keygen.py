"""`edgepack keygen`: a key pair for signed bundles (`build --sign`, `check.py --public-key`)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import emit, json_option


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for edgepack-signing.key (private, mode 0600) and edgepack-signing.pub.",
)
@json_option
def keygen(out, as_json):
    """Make an elliptic-curve key pair for signing bundles."""
    from ..bundle.signing import keygen as make_keys

    key, pub = make_keys(Path(out))
    if as_json:
        emit({"private_key": str(key), "public_key": str(pub)})
        return
    click.echo(f"private key  {key}  (keep it on the build machine; `edgepack build --sign` it)")
    click.echo(f"public key   {pub}  (install it on the devices; `check.py --public-key` it)")
