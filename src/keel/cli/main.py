"""Assembles the ``keel`` command from one module per command group.

Command modules load when their command runs, not at start: ``keel serve``
must not pay for the eval runner's or the rollout tools' imports.
"""

from __future__ import annotations

import importlib

import click

from keel import __version__
from keel.cli._base import KeelGroup

# command name -> "module:attribute", in the order ``keel --help`` lists them
COMMANDS = {
    "serve": "keel.cli.serve:serve",
    "sim": "keel.cli.sim:sim",
    "keys": "keel.cli.keys:keys",
    "tenants": "keel.cli.tenants:tenants",
    "prompts": "keel.cli.prompts:prompts",
    "eval": "keel.cli.evals:eval_",
    "dataset": "keel.cli.evals:dataset",
    "rollout": "keel.cli.experiments:rollout",
    "experiment": "keel.cli.experiments:experiment",
    "audit": "keel.cli.events:audit",
    "events": "keel.cli.events:events",
    "config": "keel.cli.config_cmd:config",
    "traces": "keel.cli.traces:traces",
    "cost": "keel.cli.cost:cost",
    "replay": "keel.cli.replay:replay",
    "gc": "keel.cli.gc:gc",
}


class LazyGroup(KeelGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keel")
def cli() -> None:
    """Keel: an LLMOps control plane in front of every LLM call."""


def main() -> None:
    cli()
