"""``keel sim``: serve the built-in LLM simulator over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from keel.config import SimulatorProvider


def _load(path: str | None, seed: int | None, fast: bool) -> SimulatorProvider:
    """The simulator config from ``path`` (a provider block; ``kind`` optional)."""
    import os

    from pydantic import ValidationError

    from keel.config import (
        Delay,
        SimulatorProvider,
        format_validation,
        interpolate_env,
        read_yaml,
    )
    from keel.errors import ConfigError

    raw: dict[str, Any] = {}
    if path is not None:
        raw = interpolate_env(read_yaml(path), (), os.environ, path)
    try:
        config = SimulatorProvider.model_validate({"kind": "simulator", **raw})
    except ValidationError as exc:
        raise ConfigError(format_validation(exc), source=path or "<sim>") from None
    update: dict[str, Any] = {}
    if seed is not None:
        update["seed"] = seed
    if fast:
        update.update(latency=Delay(), ttft=Delay(), tokens_per_second=None)
    return config.model_copy(update=update) if update else config


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=9000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML simulator block (the fields of a simulator provider; 'kind' optional).",
)
@click.option("--seed", type=int, help="Seed for reproducible outcomes (overrides the file).")
@click.option("--fast", is_flag=True, help="No latency, TTFT or token pacing (benchmarks).")
def sim(host: str, port: int, config_path: str | None, seed: int | None, fast: bool) -> None:
    """Serve the LLM simulator (OpenAI and Anthropic APIs) on HOST:PORT."""
    import socket

    import uvicorn

    from keel.providers.simulator import create_sim_app

    config = _load(config_path, seed, fast)
    app = create_sim_app(config)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                # Port 0 picks a free port; report the real one so scripts can connect.
                bound = self.servers[0].sockets[0].getsockname()[1]
                click.echo(f"keel sim listening on http://{host}:{bound}")

    # "auto" picks uvloop and httptools when installed, asyncio and h11 otherwise.
    server_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        loop="auto",
        http="auto",
        lifespan="off",
        # A simulated timeout hangs on purpose; it must not hold up Ctrl-C or SIGTERM.
        timeout_graceful_shutdown=2,
    )
    Server(server_config).run()
