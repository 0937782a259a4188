"""Engines and migrations for the two supported databases.

``sqlite:///path.db`` is the embedded default; ``postgresql://`` (always driven
by psycopg 3) is the scale-out store. Every message this module raises names
the database through :func:`redact_url`, so a password never reaches a log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from keel.errors import ConfigError, StoreError

# How long a SQLite writer waits for another writer's lock before failing:
# the CLI writes keys while a running gateway reads and writes the same file.
SQLITE_BUSY_TIMEOUT_MS = 5000
# How long psycopg may take to open a PostgreSQL connection. libpq's default is
# to wait forever, so a black-holed database would hang every request that
# needs a fresh connection; a ``connect_timeout`` in the URL takes precedence.
PG_CONNECT_TIMEOUT_S = 5

_MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration. Starting a server checks it with one SELECT, so a
# migrated database never pays for importing Alembic (a worker starts in
# well under a second); tests/store assert it matches the scripts' head.
SCHEMA_HEAD = "0006_experiments"
_POSTGRES_DRIVERS = {"postgresql", "postgresql+psycopg"}


# Most rows any list call of a repository returns at once.
MAX_LIST = 1000


def capped(limit: int) -> int:
    """``limit`` brought into 1..MAX_LIST: a list call never runs unbounded."""
    return max(1, min(limit, MAX_LIST))


def json_dumps(value: Any) -> str:
    """JSON text for a JSON column: the engines' serializer and the bulk write path's.

    orjson is several times faster than json.dumps on the telemetry write path
    (a JSON column per stored request), and its output is plain JSON. Text,
    not bytes: SQLite would store bytes as a BLOB, PostgreSQL as bytea.
    """
    return orjson.dumps(value).decode()


def redact_url(url: str | URL) -> str:
    """``url`` as text with any password replaced by ``***``; safe to log."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (exc.ArgumentError, ValueError):
        # Unparseable: show only the scheme, since we cannot tell where a secret sits.
        scheme = str(url).split(":", 1)[0] if ":" in str(url) else "?"
        return f"{scheme}://<unparseable>"
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite files get WAL mode, a busy timeout and their folder.

    Relative SQLite paths resolve against the current directory. Plain
    ``postgresql://`` URLs are pointed at the psycopg 3 driver, and give up
    connecting after :data:`PG_CONNECT_TIMEOUT_S` unless the URL sets
    ``connect_timeout``. Nothing connects until the engine is first used.
    """
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):
        raise ConfigError(
            f"database_url: cannot parse {redact_url(url)};"
            " expected sqlite:///path/to/keel.db or postgresql://user@host/db"
        ) from None
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return _sqlite_engine(parsed)
    if parsed.drivername in _POSTGRES_DRIVERS:
        # connect_args override the URL's query, so only fill in what the URL leaves out.
        connect_args = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        )
        return sa.create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            pool_pre_ping=True,  # a gateway outlives database restarts and failovers
            connect_args=connect_args,
            json_serializer=json_dumps,
        )
    raise ConfigError(
        f"database_url: unsupported scheme {parsed.drivername!r};"
        " expected sqlite:///path/to/keel.db or postgresql://user@host/db"
    )


def _sqlite_engine(url: URL) -> sa.Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    if not in_memory:
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create the folder for {redact_url(url)}: {error.strerror}"
            ) from None
    options: dict[str, Any] = {
        "connect_args": {"check_same_thread": False},
        "json_serializer": json_dumps,
    }
    if in_memory:
        # One shared connection, or every checkout would see a new empty database.
        options["poolclass"] = StaticPool
    engine = sa.create_engine(url, **options)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (a serving gateway) proceed while one writer commits.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a power
        # cut may lose the last batches, which the telemetry writer already
        # bounds and documents; a process crash loses nothing committed.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


@contextmanager
def translate_errors(engine: sa.Engine, doing: str) -> Iterator[None]:
    """Re-raise database failures as ``StoreError`` naming the (redacted) database.

    Every ``SQLAlchemyError`` counts, not only driver errors: a pool checkout
    timeout (``sqlalchemy.exc.TimeoutError``) is the database being overloaded
    or unreachable, which callers must see as ``store_unavailable``, not a bug.
    """
    try:
        yield
    except exc.SQLAlchemyError as error:
        raise StoreError(
            f"{doing} failed on {redact_url(engine.url)}: {_describe(error, engine.url)}"
        ) from None


def _describe(error: exc.SQLAlchemyError, url: URL) -> str:
    # Driver errors carry the driver's own words in .orig; SQLAlchemy's own
    # errors (pool timeouts) only their message, whose first line says enough.
    orig = error.orig if isinstance(error, exc.DBAPIError) else None
    cause: BaseException = orig if orig is not None else error
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    text = lines[0]
    # Drivers quote connection details back; make sure the password is not among them.
    if url.password:
        text = text.replace(str(url.password), "***")
    return text


def schema_version(engine: sa.Engine) -> str | None:
    """The migration the database is at, or None when it has never been migrated."""
    with translate_errors(engine, "reading the schema version"), engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: sa.Engine) -> None:
    """Run every pending migration up to the newest; safe to call on every start."""
    if schema_version(engine) == SCHEMA_HEAD:
        return
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with translate_errors(engine, "migrating the database"), engine.begin() as connection:
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as error:
            # e.g. the database was migrated by a newer Keel than this one.
            raise StoreError(f"migrating {redact_url(engine.url)} failed: {error}") from None
