"""Assembles the ``keel`` command from one module per command group."""

from __future__ import annotations

import click

from keel import __version__
from keel.cli._base import KeelGroup
from keel.cli.config_cmd import config
from keel.cli.cost import cost
from keel.cli.evals import dataset, eval_
from keel.cli.events import audit, events
from keel.cli.experiments import experiment, rollout
from keel.cli.gc import gc
from keel.cli.keys import keys
from keel.cli.prompts import prompts
from keel.cli.replay import replay
from keel.cli.serve import serve
from keel.cli.sim import sim
from keel.cli.tenants import tenants
from keel.cli.traces import traces


@click.group(cls=KeelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keel")
def cli() -> None:
    """Keel: an LLMOps control plane in front of every LLM call."""


cli.add_command(serve)
cli.add_command(sim)
cli.add_command(keys)
cli.add_command(tenants)
cli.add_command(prompts)
cli.add_command(audit)
cli.add_command(events)
cli.add_command(config)
cli.add_command(traces)
cli.add_command(cost)
cli.add_command(replay)
cli.add_command(gc)
cli.add_command(eval_)
cli.add_command(dataset)
cli.add_command(rollout)
cli.add_command(experiment)


def main() -> None:
    cli()
