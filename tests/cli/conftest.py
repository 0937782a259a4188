"""CLI fixtures: a keel.yaml on a temp SQLite database and a store to fill it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_support import Invoke, write_config
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.config import load_config
from keel.store import RequestStore, make_engine, upgrade
from keel.telemetry import RequestRecord


@pytest.fixture
def keel_yaml(tmp_path: Path) -> str:
    return write_config(tmp_path)


@pytest.fixture
def store(keel_yaml: str) -> Iterator[RequestStore]:
    engine = make_engine(load_config(keel_yaml).database_url)
    upgrade(engine)
    try:
        yield RequestStore(engine)
    finally:
        engine.dispose()


@pytest.fixture
def write(store: RequestStore) -> Callable[..., None]:
    """Store records (all kept) and count them in the rollups, as the writer does."""

    def write(*records: RequestRecord) -> None:
        store.write_batch(list(records), [True] * len(records))

    return write


@pytest.fixture
def keel(keel_yaml: str) -> Invoke:
    """``keel ARGS -c keel.yaml`` on a wide terminal, so tables do not wrap."""
    runner = CliRunner(env={"COLUMNS": "250"})

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, [*args, "-c", keel_yaml], input=input)

    return invoke
