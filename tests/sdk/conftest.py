"""A real gateway with a pushed and promoted prompt, and the SDK pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sdk_support import Registry, seed

from e2e_support import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with ``greet`` 1.0.0 pushed and promoted, made once and copied per test."""
    workdir = tmp_path_factory.mktemp("seeded")
    seed(Cluster(workdir))
    return workdir


@pytest.fixture
def registry(cluster: Cluster, seeded: Path) -> Registry:
    """A gateway on the simulator serving ``greet`` 1.0.0 as production."""
    return Registry.start(cluster, seeded)
