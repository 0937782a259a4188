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
    placeholders = bulk.insert_requests.count("?") + bulk.insert_requests.count("%s")
    assert placeholders == len(requests.c)
    if engine.dialect.name == "postgresql":
        assert "%s::JSON, %s::JSON)" in bulk.insert_requests
        assert bulk.insert_requests_json is None
    else:  # one JSON array per batch, unpacked by SQLite: one step, one GIL hand-over
        assert bulk.insert_requests_json is not None
        assert bulk.insert_requests_json.count("?") == 1
        assert f"json_extract(value, '$[{len(requests.c) - 1}]')" in bulk.insert_requests_json


def _column_types(engine: sa.Engine, request_id: str) -> list[str]:
    # SQLite's storage class of every column: 1, 1.0 and '1' compare equal in Python.
    names = ", ".join(f"typeof({c.name})" for c in requests.c)
    with engine.connect() as conn:
        query = f"SELECT {names} FROM requests WHERE request_id = ?"
        return list(conn.exec_driver_sql(query, (request_id,)).one())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the JSON array is SQLite's alone
def test_executemany_stores_what_the_json_array_stores(engine: sa.Engine, rs: RequestStore) -> None:
    assert writer(engine.dialect).insert_requests_json is not None
    records = _varied()
    rs.write_batch(records, [True] * len(records))
    copies = [dataclasses.replace(r, request_id=REF + r.request_id) for r in records]
    bulk = writer(engine.dialect)
    rows, _ = encode_batch(copies, [True] * len(copies), bulk.stamp)
    with engine.begin() as conn:
        conn.exec_driver_sql(bulk.insert_requests, rows)

    stored = _raw(engine, requests, "request_id")
    assert len(stored) == 2 * len(records)
    for record in records:
        assert stored[record.request_id] == stored[REF + record.request_id]
        expected = _column_types(engine, REF + record.request_id)
        assert _column_types(engine, record.request_id) == expected


def test_a_nul_from_the_caller_does_not_fail_the_batch(rs: RequestStore) -> None:
    # A `user` field may be any JSON string, "\\u0000" included. PostgreSQL
    # refuses NUL in text and SQLite's json_extract would cut the value at it.
    odd = make_record(
        end_user="user\x00two",
        feature="f\x00",
        request_body={"messages": [{"role": "user", "content": "a\x00b"}]},
    )
    other = make_record()
    rs.write_batch([odd, other], [True, True])

    got = rs.get(odd.request_id, tenant=None)
    assert got is not None
    assert (got.end_user, got.feature) == ("user\ufffdtwo", "f\ufffd")
    assert got.content is not None  # JSON keeps the NUL escaped
    assert got.content["request_body"]["messages"][0]["content"] == "a\x00b"
    assert rs.get(other.request_id, tenant=None) is not None
    users = {r.group["user"]: r.requests for r in rs.spend(["user"], since=T0.date())}
    assert users["user\ufffdtwo"] == 1


def test_a_batch_too_big_for_one_string_goes_row_by_row(
    rs: RequestStore, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bulk, "JSON_BATCH_MAX_BYTES", 100)
    records = [make_record(), make_record()]
    rs.write_batch(records, [True, True])
    for record in records:
        got = rs.get(record.request_id, tenant=None)
        assert got is not None and got.feature == record.feature


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_without_json_functions_writes_row_by_row(
    engine: sa.Engine, rs: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bulk, "sqlite_has_json", lambda: False)
    monkeypatch.setattr(_bulk, "_writers", {})  # build it again under the probe's new answer
    assert writer(engine.dialect).insert_requests_json is None
    records = _varied()
    rs.write_batch(records, [True] * len(records))
    for record in records:
        assert rs.get(record.request_id, tenant=None) is not None
