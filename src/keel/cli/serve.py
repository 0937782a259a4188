"""``keel serve``: run the gateway."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from keel.cli._base import config_option

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from keel.api import KeelApp

DEMO_TENANT = "demo"


@click.command()
@config_option
@click.option("--host", default=None, help="Interface to bind (default: server.host).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: server.port)."
)
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes.")
@click.option(
    "--demo", is_flag=True, help="Create a demo key on first run and print how to call the gateway."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    config_path: str,
    host: str | None,
    port: int | None,
    workers: int | None,
    demo: bool,
    log_level: str,
) -> None:
    """Run the OpenAI-compatible gateway described by keel.yaml."""
    import uvicorn

    from keel.config import CONFIG_PATH_ENV, load_config
    from keel.errors import ConfigError
    from keel.store import make_engine, upgrade

    config = load_config(config_path)
    host = host or config.server.host
    port = config.server.port if port is None else port
    workers = workers or config.server.workers
    if workers > 1 and config.tiers and config.limits.backend == "memory":
        # Each worker would count on its own: every limit and budget times N.
        raise ConfigError(
            f"limits.backend: memory keeps limits per process; with {workers} workers"
            " set limits.backend: redis",
            source=config_path,
        )

    # Migrate once here so N workers never race on the schema.
    engine = make_engine(config.database_url)
    try:
        upgrade(engine)
        if demo:
            _print_demo(engine, host, port, config.models[0].alias)
    finally:
        engine.dispose()

    app_target: KeelApp | str
    if workers == 1:
        from keel.api import create_app

        app_target, factory = create_app(config), False
    else:
        os.environ[CONFIG_PATH_ENV] = str(Path(config_path).resolve())
        app_target, factory = "keel.api.workers:app", True
    uvicorn.run(
        app_target,
        factory=factory,
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        http="httptools",
        ws="none",  # no WebSocket routes: skip importing a WebSocket stack
        loop="uvloop",
        timeout_graceful_shutdown=30,
    )


def _print_demo(engine: Engine, host: str, port: int, alias: str) -> None:
    from rich.console import Console

    from keel.store import KeyStore

    key_file = Path(".keel/demo-key")
    if key_file.exists():
        key = key_file.read_text().strip()
        note = f"demo key (kept in {key_file} for this local demo)"
    else:
        key, _ = KeyStore(engine).create_key(DEMO_TENANT, name="demo")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
        note = f"new demo key for tenant '{DEMO_TENANT}' (also saved to {key_file})"
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    curl = (
        f"curl {base}/chat/completions \\\n"
        f'  -H "Authorization: Bearer {key}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f'  -d \'{{"model": "{alias}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\''
    )
    sdk = (
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{base}", api_key="{key}")\n'
        f'reply = client.chat.completions.create(model="{alias}",\n'
        '    messages=[{"role": "user", "content": "Hello!"}])\n'
        "print(reply.choices[0].message.content)"
    )
    # Plain text, never wrapped or boxed, so every line can be copied as is.
    console = Console(soft_wrap=True)
    console.rule("[bold]Keel demo")
    console.print(f"[bold]{note}[/]")
    console.print(key, markup=False, highlight=False)
    console.print("\n[bold]curl[/]")
    console.print(curl, markup=False, highlight=False)
    console.print("\n[bold]OpenAI SDK[/]")
    console.print(sdk, markup=False, highlight=False)
    console.rule()
