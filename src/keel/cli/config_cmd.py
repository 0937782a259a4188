"""``keel config``: validate keel.yaml without starting anything."""

from __future__ import annotations

import click


@click.group()
def config() -> None:
    """Inspect and validate keel.yaml."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate PATH: exit 0 if it is a valid keel.yaml, 2 with the bad field if not."""
    from keel.config import load_config

    loaded = load_config(path)
    chat = sum(1 for m in loaded.models if m.kind == "chat")
    click.echo(
        f"{path}: ok ({len(loaded.providers)} providers, {chat} chat and "
        f"{len(loaded.models) - chat} embeddings aliases)"
    )
