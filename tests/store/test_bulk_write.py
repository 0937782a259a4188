"""The bulk write path stores exactly what SQLAlchemy's types would have, on both databases.

``write_batch`` hands pre-encoded tuples straight to the driver
(``keel.store._bulk``). These tests write the same records once that way and
once through SQLAlchemy Core with full type processing (the previous write
path), then compare the raw stored values and what ``get`` reads back.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from request_support import T0, make_record
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keel.store import RequestStore, StoredRequest, _bulk
from keel.store._bulk import writer
from keel.store._rows import encode_batch
from keel.store.tables import SPEND_COUNTERS, SPEND_KEY, requests, spend_daily
from keel.telemetry.record import RequestRecord, Usage

REF = "ref-"  # the prefix of rows written by the reference (SQLAlchemy) path


@pytest.fixture
def rs(engine: sa.Engine) -> RequestStore:
    return RequestStore(engine)


def _native(epoch: float) -> tuple[datetime, date]:
    # Python values, as callers of SQLAlchemy pass them: its types do the encoding.
    at = datetime.fromtimestamp(epoch, UTC)
    return at, at.date()


def _varied() -> list[RequestRecord]:
    """Records exercising every column kind: NULLs, booleans, JSON, clipping, odd times."""
    return [
        make_record(
            ttft_ms=80.06,
            parent_span_id="00f067aa0ba902b7",
            request_body={"model": "fast", "messages": [{"role": "user", "content": "héllo"}]},
            response_text="hi ✓",
            stream=True,
            shadow=True,
            cache="hit",
            guardrail="flag",
            # Microseconds that a naive string format would drop or round.
            at=T0 + timedelta(microseconds=123_457),
        ),
        make_record(
            status="error",
            http_status=502,
            error_type="provider_all_upstreams_failed",
            cost_usd=None,  # unknown price: SQL NULL, never 0
            usage=Usage(input_tokens=7, estimated=True, cache_write_tokens=3),
            tenant=None,
            key_id=None,
            end_user="u" * 500,  # clipped
            metadata={},
            attempts=(),
            stages=(),
            finish_reasons=(),
            response_model=None,
            provider=None,
            at=datetime(2030, 1, 1, tzinfo=UTC),  # whole second: microseconds still stored
        ),
        make_record(request_body={"x": None}, at=timedelta(days=-400, seconds=1)),
    ]


def _reference_write(engine: sa.Engine, records: list[RequestRecord]) -> None:
    """The previous write path: dict rows through SQLAlchemy Core and its type processors."""
    rows, increments = encode_batch(records, [True] * len(records), _native)
    json_columns = {"detail", "content"}
    dict_rows = []
    for row in rows:
        values = dict(zip(requests.c.keys(), row, strict=True))
        for name in json_columns:
            values[name] = None if values[name] is None else orjson.loads(values[name])
        values["request_id"] = REF + values["request_id"]
        dict_rows.append(values)
    spend_rows = []
    for increment in increments:
        values = dict(zip((*SPEND_KEY, *SPEND_COUNTERS), increment, strict=True))
        values["tenant"] = REF + values["tenant"]
        spend_rows.append(values)
    insert: Any = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    upsert = insert(spend_daily)
    with engine.begin() as conn:
        conn.execute(insert(requests).on_conflict_do_nothing(), dict_rows)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=list(SPEND_KEY),
                set_={c: spend_daily.c[c] + upsert.excluded[c] for c in SPEND_COUNTERS},
            ),
            spend_rows,
        )


def _raw(engine: sa.Engine, table: sa.Table, key: str) -> dict[str, tuple[Any, ...]]:
    # Plain text SQL: the driver's values, with no SQLAlchemy result processing.
    with engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {table.name}"))
        names = list(result.keys())
        return {
            str(row[names.index(key)]): tuple(
                v for n, v in zip(names, row, strict=True) if n != key
            )
            for row in result
        }


def test_bulk_rows_store_what_sqlalchemy_stored(rs: RequestStore, engine: sa.Engine) -> None:
    records = _varied()
    _reference_write(engine, records)
    rs.write_batch(records, [True] * len(records))

    stored = _raw(engine, requests, "request_id")
    for record in records:
        assert stored[record.request_id] == stored[REF + record.request_id]
        got = rs.get(record.request_id, tenant=None)
        expected = rs.get(REF + record.request_id, tenant=None)
        assert got is not None and expected is not None
        assert got == dataclasses.replace(expected, request_id=record.request_id)
        assert got.started_at.tzinfo is not None
        assert got.started_at == datetime.fromtimestamp(record.started_at, UTC)


def test_bulk_rollups_store_what_sqlalchemy_stored(engine: sa.Engine, rs: RequestStore) -> None:
    records = _varied()
    _reference_write(engine, records)
    rs.write_batch(records, [False] * len(records))

    with engine.connect() as conn:
        result = conn.execute(
            sa.text(f"SELECT {', '.join((*SPEND_KEY, *SPEND_COUNTERS))} FROM spend_daily")
        )
        rows = [tuple(row) for row in result]
    bulk = sorted(r for r in rows if not r[1].startswith(REF))
    reference = sorted((r[0], r[1][len(REF) :], *r[2:]) for r in rows if r[1].startswith(REF))
    assert bulk == reference and len(bulk) == 3


def test_every_column_lands_in_its_place(rs: RequestStore) -> None:
    # Distinct values everywhere, so a tuple out of column order cannot pass.
    record = make_record(
        trace_id="1" * 32,
        span_id="2" * 16,
        tenant="ten",
        key_id=42,
        end_user="usr",
        feature="feat",
        alias="asked",
        served_alias="served",
        deployment="prov/dep",
        provider_model="pm",
        stream=True,
        http_status=201,
        error_type="et",
        usage=Usage(
            input_tokens=11, cached_input_tokens=12, cache_write_tokens=13, output_tokens=14
        ),
        cost_usd=0.000000015,
        latency_ms=16.04,
        ttft_ms=17.06,
        prompt_name="pn",
        prompt_version="pv",
        prompt_hash="ph",
        variant="var",
        cache="miss",
        guardrail="allow",
        shadow=False,
    )
    rs.write_batch([record], [True])

    got = rs.get(record.request_id, tenant=None)
    assert got is not None
    # detail is compared by the tests above.
    assert dataclasses.replace(got, detail={}) == StoredRequest(
        request_id=record.request_id,
        trace_id="1" * 32,
        span_id="2" * 16,
        started_at=T0,
        tenant="ten",
        key_id=42,
        end_user="usr",
        feature="feat",
        alias="asked",
        served_alias="served",
        deployment="prov/dep",
        provider_model="pm",
        operation="chat",
        stream=True,
        http_status=201,
        status="ok",
        error_type="et",
        input_tokens=11,
        cached_input_tokens=12,
        cache_write_tokens=13,
        output_tokens=14,
        usage_estimated=False,
        cost_nano=15,
        latency_ms=16.0,
        ttft_ms=17.1,
        attempt_count=1,
        prompt_name="pn",
        prompt_version="pv",
        prompt_hash="ph",
        variant="var",
        cache="miss",
        guardrail="allow",
        shadow=False,
        detail={},
        content=None,
    )


def test_duplicate_request_ids_are_skipped_within_and_across_batches(
    rs: RequestStore, engine: sa.Engine
) -> None:
    first = make_record(request_id="dup", feature="first")
    rs.write_batch([first, make_record(request_id="dup", feature="second")], [True, True])
    rs.write_batch([make_record(request_id="dup", feature="third"), make_record()], [True, True])

    got = rs.get("dup", tenant=None)
    assert got is not None and got.feature == "first"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(requests)).scalar() == 2
    assert sum(r.requests for r in rs.spend([], since=T0.date())) == 4


def test_sql_is_built_from_the_table_metadata(engine: sa.Engine) -> None:
    bulk = writer(engine.dialect)
    assert writer(engine.dialect) is bulk  # built once per dialect
    assert ", ".join(requests.c.keys()) in bulk.insert_requests
    assert bulk.insert_requests.endswith("ON CONFLICT (request_id) DO NOTHING")
    if engine.dialect.name == "postgresql":
        assert bulk.insert_requests.count("%s") == len(requests.c)
        assert "%s::JSON, %s::JSON)" in bulk.insert_requests
    else:  # one JSON array per batch, unpacked by SQLite: one step, one GIL hand-over
        assert bulk.insert_requests.count("?") == 1
        assert f"json_extract(value, '$[{len(requests.c) - 1}]')" in bulk.insert_requests


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the JSON array is SQLite's alone
def test_sqlite_without_json_functions_stores_the_same_rows(
    engine: sa.Engine, rs: RequestStore
) -> None:
    assert _bulk.sqlite_has_json()  # so the store under test took the JSON path
    records = _varied()
    rs.write_batch(records, [True] * len(records))
    # The executemany path, as used where SQLite lacks json_each.
    plain = _bulk._build(
        engine.dialect, "?", _bulk._sqlite_stamp, cast_json=False, rows_as_json=False
    )
    copies = [dataclasses.replace(r, request_id=REF + r.request_id) for r in records]
    rows, increments = encode_batch(copies, [True] * len(copies), plain.stamp)
    with engine.begin() as conn:
        plain.write(conn, rows, increments)

    stored = _raw(engine, requests, "request_id")
    assert len(stored) == 2 * len(records)
    for record in records:
        assert stored[record.request_id] == stored[REF + record.request_id]
