"""Shared CLI plumbing: error mapping to exit codes and the ``-c`` option."""

from __future__ import annotations

import sys
from typing import Any

import click

from keel.errors import CallerError, ConfigError, KeelError

DEFAULT_CONFIG = "keel.yaml"

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Path to keel.yaml.",
)


def exit_code(error: KeelError) -> int:
    """2 for a mistake in what the user gave us, 1 for everything else."""
    return 2 if isinstance(error, ConfigError | CallerError) else 1


class KeelGroup(click.Group):
    """A group whose commands report ``KeelError`` as one readable line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeelError as error:
            first, *rest = error.message.splitlines() or [""]
            click.echo(f"keel: error: {first}", err=True)
            for line in rest:
                click.echo(f"  {line}", err=True)
            sys.exit(exit_code(error))
