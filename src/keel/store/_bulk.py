"""The telemetry write path's two statements, handed straight to the DBAPI driver.

``RequestStore.write_batch`` runs on the telemetry writer thread, which
shares the GIL with the gateway's event loop: every microsecond it spends
in Python is taken from serving requests. Through SQLAlchemy Core, an
executemany of a few hundred rows cost ~80 µs of CPU per row just in
SQLAlchemy (a parameter dict per row run through every column's type
processor, then positional conversion), more than building the rows. Here
the rows arrive as tuples already in the form each database stores (see
``keel.store._rows.encode_batch``), so the only per-row work left is the
driver's own: ``exec_driver_sql`` hands the values to the cursor untouched,
and still runs in SQLAlchemy's transaction, events and error handling.
The SQL is built once per dialect from the table metadata.

On SQLite the request rows go in as one statement per batch rather than an
executemany. The sqlite3 module lets go of the GIL around every step, so an
executemany of 100 rows handed the GIL to the event loop and back 100 times
per batch, each hand-over costing the event loop a wake-up and cold caches.
Here the batch travels as one JSON array that SQLite unpacks itself
(``json_each``), so the writer steps once. Unpacking costs SQLite more than
binding (about 35 µs a row against 14 µs), but without the GIL: in two
benchmark runs the event loop used about 20 µs less CPU per request and the
gateway served about 7 % more requests a second. That holds for a writer
thread inside the gateway (``telemetry.writer: thread``); the telemetry
process has no event loop to disturb and takes the cheaper executemany
(``RequestStore(pack_batches=False)``). PostgreSQL keeps its executemany,
which psycopg pipelines into one round trip anyway.

The values must be exactly what SQLAlchemy's types would have bound, so that
reads through SQLAlchemy (``RequestStore.get``, ``list_requests``, rollups)
see no difference; tests/store compare both paths column for column. Reads
and every other write stay on SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from keel.store._rows import Row, Stamp
from keel.store.db import json_dumps
from keel.store.tables import SPEND_COUNTERS, SPEND_KEY, requests, spend_daily


def _sqlite_stamp(epoch: float) -> tuple[str, str]:
    # What SQLAlchemy's SQLite DateTime stores for a UTCDateTime (naive UTC):
    # "YYYY-MM-DD HH:MM:SS.ffffff", microseconds always present, so the text
    # sorts and compares chronologically; its Date stores "YYYY-MM-DD".
    # isoformat() spells exactly that, ahead of the "+00:00" cut off here.
    text = datetime.fromtimestamp(epoch, UTC).isoformat(" ", "microseconds")[:26]
    return text, text[:10]


def _postgres_stamp(epoch: float) -> tuple[datetime, date]:
    # psycopg sends an aware datetime as timestamptz and a date as date, as
    # SQLAlchemy would for UTCDateTime and Date.
    at = datetime.fromtimestamp(epoch, UTC)
    return at, at.date()


# A batch goes in as one JSON text only below this size: SQLite refuses a
# string over SQLITE_MAX_LENGTH (10^9 bytes by default, less in some builds),
# and a batch of captured prompts with images in them can get there.
JSON_BATCH_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BulkWriter:
    """One dialect's SQL and value encoding for the telemetry write path."""

    insert_requests: str  # one row per execution; skips a request id already stored
    # The same insert for a whole batch passed as one JSON array (SQLite with
    # its JSON functions); None where the driver's executemany is used.
    insert_requests_json: str | None
    upsert_spend: str  # adds each increment to its rollup row, creating it if new
    stamp: Stamp

    def write(
        self, conn: sa.Connection, rows: list[Row], increments: list[Row], *, pack: bool = True
    ) -> None:
        """Run both statements on ``conn`` (in the caller's transaction).

        ``pack=False`` takes the executemany path even where the JSON one exists.
        """
        if rows:
            packed = self._packed(rows) if pack else None
            if packed is not None:
                conn.exec_driver_sql(*packed)
            else:
                conn.exec_driver_sql(self.insert_requests, rows)
        if increments:
            conn.exec_driver_sql(self.upsert_spend, increments)

    def _packed(self, rows: list[Row]) -> tuple[str, tuple[str]] | None:
        """The JSON insert and its one parameter, or None to go row by row."""
        if self.insert_requests_json is None:
            return None
        text = json_dumps(rows)
        # json_extract returns text only up to an escaped NUL. encode_batch
        # replaces NULs in the text columns, so this is a guard; escaped NULs
        # inside the JSON columns match too, which only costs speed.
        if "\\u0000" in text or len(text) > JSON_BATCH_MAX_BYTES:
            return None
        return self.insert_requests_json, (text,)


def _build(
    dialect: Dialect, placeholder: str, stamp: Stamp, *, cast_json: bool, with_json: bool
) -> BulkWriter:
    quote = dialect.identifier_preparer.quote

    def bind(column: sa.Column[object]) -> str:
        # PostgreSQL gets the JSON columns as text and casts them to the
        # column's own type; SQLite stores the text as is.
        if cast_json and isinstance(column.type, sa.JSON):
            return f"{placeholder}::{column.type.compile(dialect=dialect)}"
        return placeholder

    def insert(table: sa.Table, columns: list[sa.Column[object]]) -> str:
        names = ", ".join(quote(c.name) for c in columns)
        values = ", ".join(bind(c) for c in columns)
        return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({values})"

    def insert_from_json(table: sa.Table) -> str:
        # json_extract, not ->>: it needs no newer SQLite than the 3.9 JSON1 has.
        # Its values are the ones binding would give (text, integer with true
        # as 1, real, NULL), except text with a NUL: see BulkWriter._packed.
        # "WHERE true" lets the ON CONFLICT clause follow a SELECT.
        names = ", ".join(quote(c.name) for c in table.c)
        values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(table.c)))
        source = "FROM json_each(?) WHERE true"
        return f"INSERT INTO {quote(table.name)} ({names}) SELECT {values} {source}"

    key = ", ".join(quote(c.name) for c in requests.primary_key.columns)
    skip_known = f" ON CONFLICT ({key}) DO NOTHING"
    spend = quote(spend_daily.name)
    additions = ", ".join(
        f"{quote(c)} = {spend}.{quote(c)} + excluded.{quote(c)}" for c in SPEND_COUNTERS
    )
    return BulkWriter(
        insert_requests=insert(requests, list(requests.c)) + skip_known,
        insert_requests_json=insert_from_json(requests) + skip_known if with_json else None,
        upsert_spend=(
            f"{insert(spend_daily, [spend_daily.c[c] for c in (*SPEND_KEY, *SPEND_COUNTERS)])}"
            f" ON CONFLICT ({', '.join(quote(c) for c in SPEND_KEY)}) DO UPDATE SET {additions}"
        ),
        stamp=stamp,
    )


def sqlite_has_json() -> bool:
    """Whether the SQLite under the sqlite3 module has its JSON functions.

    Built in since SQLite 3.38 and compiled into nearly every earlier build;
    without them the rows go in by executemany, as they did before.
    """
    try:
        with closing(sqlite3.connect(":memory:")) as probe:
            probe.execute("SELECT json_extract(value, '$[0]') FROM json_each('[[1]]')")
    except sqlite3.OperationalError:
        return False
    return True


_BUILDERS: dict[str, Callable[[Dialect], BulkWriter]] = {
    # sqlite3 binds True/False as the integers 1/0, as SQLAlchemy's Boolean does.
    "sqlite": lambda d: _build(d, "?", _sqlite_stamp, cast_json=False, with_json=sqlite_has_json()),
    # psycopg 3: executemany is pipelined, one round trip for the whole batch.
    "postgresql": lambda d: _build(d, "%s", _postgres_stamp, cast_json=True, with_json=False),
}
_writers: dict[str, BulkWriter] = {}


def writer(dialect: Dialect) -> BulkWriter:
    """The bulk writer for ``dialect`` (SQLite or PostgreSQL), built on first use."""
    found = _writers.get(dialect.name)
    if found is None:
        build = _BUILDERS.get(dialect.name)
        if build is None:
            raise ValueError(f"no bulk write path for the {dialect.name!r} dialect")
        # A race here only builds the same strings twice.
        found = _writers[dialect.name] = build(dialect)
    return found
