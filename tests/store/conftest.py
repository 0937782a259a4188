"""Store fixtures: every test that asks for ``db_url`` runs on SQLite and on PostgreSQL.

PostgreSQL tests use a database created for this session (dropped at the
end) and a fresh schema per test, selected through ``search_path`` in the
URL, so each test starts from an empty, unmigrated database. The server is
``KEEL_TEST_POSTGRES_URL`` (default: the local one, trust auth); if it cannot
be reached the PostgreSQL tests fail, because the Makefile starts it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from keystore_support import QueryCounter
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from keel.store import KeyStore, make_engine, redact_url, upgrade

ADMIN_URL = os.environ.get(
    "KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL]:
    """A database of our own on the PostgreSQL server, dropped after the session."""
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    problem = None
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as error:
        admin.engine.dispose()
        problem = str(error.orig).strip().splitlines()[0]
    if problem is not None:  # failed outside the except block, so no chained traceback
        pytest.fail(
            f"PostgreSQL at {redact_url(ADMIN_URL)} is unreachable ({problem}). "
            "Start it with `make services`, point KEEL_TEST_POSTGRES_URL at another "
            "server, or deselect these tests with -m 'not postgres'.",
            pytrace=False,
        )
    try:
        yield make_url(ADMIN_URL).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    base: URL = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    owner = make_engine(base.render_as_string(hide_password=False))
    with owner.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with owner.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        owner.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated engine, disposed after the test (no connection outlives it)."""
    engine = make_engine(db_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> KeyStore:
    return KeyStore(engine)


@pytest.fixture
def queries(engine: sa.Engine) -> Iterator[QueryCounter]:
    """Counts the statements ``engine`` sends from here on."""
    counter = QueryCounter()
    event.listen(engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", counter)
