"""The request store on SQLite and PostgreSQL: rows, sampling, tenancy, feedback, retention."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from request_support import T0, error_record, make_record
from sqlalchemy import event

from keel.errors import InvalidRequest, NotFound, StoreError
from keel.store import RequestStore, StoredRequest, TraceFilter, db, make_engine, upgrade
from keel.store.tables import feedback, requests, spend_daily


@pytest.fixture
def rs(engine: sa.Engine) -> RequestStore:
    return RequestStore(engine, clock=lambda: T0 + timedelta(hours=1))


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# --- writing -------------------------------------------------------------------------


def test_write_batch_round_trip(rs: RequestStore) -> None:
    record = make_record(ttft_ms=80.06, parent_span_id="00f067aa0ba902b7")
    rs.write_batch([record], [True])

    got = rs.get(record.request_id, tenant=None)
    assert isinstance(got, StoredRequest)
    assert got.started_at == T0 and got.started_at.tzinfo is not None
    assert (got.tenant, got.end_user, got.feature, got.alias) == ("acme", "u1", "chat", "fast")
    assert (got.provider_model, got.operation, got.status, got.http_status) == (
        "gpt-4o-mini",
        "chat",
        "ok",
        200,
    )
    assert (got.input_tokens, got.cached_input_tokens, got.output_tokens) == (100, 40, 20)
    assert got.cost_nano == 123_000 and got.cost_usd == pytest.approx(0.000123)
    assert got.latency_ms == 250.0 and got.ttft_ms == 80.1 and got.attempt_count == 1
    assert got.stream is False and got.shadow is False and got.usage_estimated is False
    assert got.prompt_version == "1.0.0" and got.variant is None
    assert got.detail["attempts"][0]["deployment"] == "openai/gpt-4o-mini"
    assert got.detail["attempts"][0]["start_ms"] == 1.2
    assert got.detail["stages"] == [{"name": "route", "start_ms": 1.0, "duration_ms": 241.0}]
    assert got.detail["finish_reasons"] == ["stop"]
    assert got.detail["metadata"] == {"team": "search"}
    assert got.detail["parent_span_id"] == "00f067aa0ba902b7"
    assert got.detail["response_model"] == "gpt-4o-mini-2024-07-18"
    assert got.content is None and got.feedback == ()


def test_captured_content_is_stored(rs: RequestStore, engine: sa.Engine) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    captured = make_record(request_body=body, response_text="hello")
    plain = make_record()
    rs.write_batch([captured, plain], [True, True])

    got = rs.get(captured.request_id, tenant=None)
    assert got is not None and got.content == {"request_body": body, "response_text": "hello"}
    with engine.connect() as conn:
        # SQL NULL, not JSON null: "IS NULL" finds uncaptured rows.
        nulls = conn.execute(sa.select(requests.c.request_id).where(requests.c.content.is_(None)))
        assert list(nulls.scalars()) == [plain.request_id]


def test_sampled_out_records_are_not_stored_but_are_counted(
    rs: RequestStore, engine: sa.Engine
) -> None:
    records = [make_record(), error_record(), make_record(), make_record()]
    rs.write_batch(records, [True, True, False, False])

    assert rs.get(records[2].request_id, tenant=None) is None
    assert _count(engine, requests) == 2
    (total,) = rs.spend([], since=T0.date())
    assert total.requests == 4 and total.errors == 1
    assert total.input_tokens == 300 and total.output_tokens == 60
    assert total.cached_input_tokens == 120
    assert total.cost_usd == pytest.approx(3 * 0.000123)


def test_unknown_cost_stays_unknown(rs: RequestStore) -> None:
    unpriced = make_record(cost_usd=None)
    rs.write_batch([unpriced, make_record(cost_usd=0.5)], [True, True])

    got = rs.get(unpriced.request_id, tenant=None)
    assert got is not None and got.cost_nano is None and got.cost_usd is None
    (total,) = rs.spend([], since=T0.date())
    assert total.unknown_cost_requests == 1 and total.cost_usd == 0.5


def test_a_stored_request_id_again_is_skipped_not_fatal(
    rs: RequestStore, engine: sa.Engine
) -> None:
    first = make_record(request_id="client-chosen")
    rs.write_batch([first], [True])
    rs.write_batch([make_record(request_id="client-chosen"), make_record()], [True, True])

    assert _count(engine, requests) == 2
    assert rs.spend([], since=T0.date())[0].requests == 3


def test_oversized_caller_text_is_clipped_not_fatal(rs: RequestStore) -> None:
    record = make_record(end_user="u" * 500, feature="f" * 500)
    rs.write_batch([record], [True])

    got = rs.get(record.request_id, tenant=None)
    assert got is not None and got.end_user == "u" * 128 and got.feature == "f" * 128
    (row,) = rs.spend(["user"], since=T0.date())
    assert row.group == {"user": "u" * 128}


def test_write_batch_checks_its_arguments(rs: RequestStore) -> None:
    with pytest.raises(ValueError, match="keep flags"):
        rs.write_batch([make_record()], [])
    rs.write_batch([], [])


def test_database_failure_is_a_store_error(db_url: str) -> None:
    engine = make_engine(db_url)  # never migrated: no tables
    try:
        with pytest.raises(StoreError, match="writing requests failed"):
            RequestStore(engine).write_batch([make_record()], [True])
    finally:
        engine.dispose()


# --- reading and tenancy -------------------------------------------------------------------


def test_tenant_scoping(rs: RequestStore) -> None:
    ours, theirs = make_record(tenant="acme"), make_record(tenant="globex")
    rs.write_batch([ours, theirs], [True, True])

    assert rs.get(theirs.request_id, tenant="acme") is None
    assert rs.get(theirs.request_id, tenant="globex") is not None
    assert rs.get(theirs.request_id, tenant=None) is not None
    listed = rs.list_requests(TraceFilter(tenant="acme"))
    assert [r.request_id for r in listed] == [ours.request_id]

    with pytest.raises(NotFound) as other:
        rs.add_feedback(theirs.request_id, tenant="acme", score=1, comment=None, tags=[])
    with pytest.raises(NotFound) as missing:
        rs.add_feedback("no-such-request", tenant="acme", score=1, comment=None, tags=[])
    # The same answer either way, so ids of other tenants cannot be probed.
    assert other.value.code == missing.value.code and other.value.param == "request_id"
    stored = rs.get(theirs.request_id, tenant=None)
    assert stored is not None and stored.feedback == ()


def test_list_filters_newest_first(rs: RequestStore) -> None:
    old = make_record(at=timedelta(minutes=-10), alias="smart", latency_ms=2000)
    slow = make_record(at=timedelta(minutes=1), latency_ms=1500, prompt_version="2.0.0")
    failed = error_record(at=timedelta(minutes=2))
    fast = make_record(at=timedelta(minutes=3), latency_ms=100)
    rs.write_batch([old, slow, failed, fast], [True] * 4)

    def ids(filters: TraceFilter, limit: int = 50) -> list[str]:
        return [r.request_id for r in rs.list_requests(filters, limit=limit)]

    assert ids(TraceFilter()) == [r.request_id for r in (fast, failed, slow, old)]
    assert ids(TraceFilter(), limit=2) == [fast.request_id, failed.request_id]
    assert ids(TraceFilter(errors_only=True)) == [failed.request_id]
    assert ids(TraceFilter(status="ok", min_latency_ms=1000)) == [slow.request_id, old.request_id]
    assert ids(TraceFilter(since=T0)) == [r.request_id for r in (fast, failed, slow)]
    assert ids(TraceFilter(alias="smart")) == [old.request_id]
    assert ids(TraceFilter(prompt_version="2.0.0")) == [slow.request_id]
    with pytest.raises(InvalidRequest) as caught:
        rs.list_requests(TraceFilter(), limit=0)
    assert caught.value.param == "limit"
    with pytest.raises(InvalidRequest) as naive:
        rs.list_requests(TraceFilter(since=datetime(2030, 1, 1)))
    assert naive.value.param == "since"


# --- feedback --------------------------------------------------------------------------


def test_feedback_is_stored_with_the_request(rs: RequestStore) -> None:
    record = make_record(tenant="acme")
    rs.write_batch([record], [True])

    down = rs.add_feedback(record.request_id, tenant="acme", score=0, comment="wrong", tags=["x"])
    up = rs.add_feedback(record.request_id, tenant=None, score=1.0, comment=None, tags=[])

    assert down.tenant == "acme" and down.tags == ("x",) and down.comment == "wrong"
    assert up.tenant == "acme"  # the request's tenant, even when an admin (None) gives it
    assert down.created_at == T0 + timedelta(hours=1)
    got = rs.get(record.request_id, tenant="acme")
    assert got is not None and got.feedback == (down, up)
    (listed,) = rs.list_requests(TraceFilter(tenant="acme"))
    assert listed.feedback == (down, up)


@pytest.mark.parametrize(
    ("score", "comment", "tags", "param"),
    [
        (1.5, None, [], "score"),
        (-0.1, None, [], "score"),
        (float("nan"), None, [], "score"),
        (True, None, [], "score"),
        (1, "x" * 4001, [], "comment"),
        (1, None, [f"t{i}" for i in range(21)], "tags"),
        (1, None, ["x" * 65], "tags"),
        (1, None, [""], "tags"),
        (1, None, [3], "tags"),
        (1, None, "good", "tags"),
    ],
)
def test_feedback_validation_names_the_field(
    rs: RequestStore, score: float, comment: str | None, tags: list[str], param: str
) -> None:
    record = make_record()
    rs.write_batch([record], [True])
    with pytest.raises(InvalidRequest) as caught:
        rs.add_feedback(record.request_id, tenant=None, score=score, comment=comment, tags=tags)
    assert caught.value.param == param and caught.value.message.startswith(f"{param}:")


# --- retention -------------------------------------------------------------------------


def test_gc_deletes_old_rows_in_batches_and_keeps_new_ones(
    rs: RequestStore, engine: sa.Engine
) -> None:
    old = [make_record(at=timedelta(days=-40, minutes=i)) for i in range(10)]
    new = [make_record(at=timedelta(days=-1)), make_record()]
    rs.write_batch(old + new, [True] * 12)
    rs.add_feedback(old[0].request_id, tenant=None, score=1, comment=None, tags=[])
    rs.add_feedback(new[0].request_id, tenant=None, score=1, comment=None, tags=[])
    rollups_before = rs.spend(["day"], since=(T0 - timedelta(days=60)).date())

    deletes: list[str] = []

    def spy(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if statement.startswith("DELETE FROM requests"):
            deletes.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    try:
        deleted = rs.gc(T0 - timedelta(days=30), batch=3)
    finally:
        event.remove(engine, "before_cursor_execute", spy)

    assert deleted == 10
    assert len(deletes) == 4  # 3 + 3 + 3 + 1, each its own transaction
    assert {r.request_id for r in rs.list_requests(TraceFilter())} == {r.request_id for r in new}
    with engine.connect() as conn:
        kept = conn.execute(sa.select(feedback.c.request_id)).scalars().all()
    assert kept == [new[0].request_id]
    assert rs.spend(["day"], since=(T0 - timedelta(days=60)).date()) == rollups_before
    assert rs.gc(T0 - timedelta(days=30), batch=3) == 0


def test_gc_checks_its_arguments(rs: RequestStore) -> None:
    with pytest.raises(InvalidRequest) as naive:
        rs.gc(datetime(2030, 1, 1))
    assert naive.value.param == "older_than"
    with pytest.raises(InvalidRequest) as batch:
        rs.gc(T0, batch=0)
    assert batch.value.param == "batch"


# --- migration -------------------------------------------------------------------------


def test_migration_0002_is_idempotent(engine: sa.Engine, rs: RequestStore) -> None:
    record = make_record()
    rs.write_batch([record], [True])

    upgrade(engine)
    upgrade(engine)

    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        names = set(sa.inspect(conn).get_table_names())
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("requests")}
    assert version == db.SCHEMA_HEAD
    assert {"requests", "spend_daily", "feedback"} <= names
    assert {
        "ix_requests_tenant_started_at",
        "ix_requests_started_at",
    } <= indexes
    assert rs.get(record.request_id, tenant=None) is not None
    assert _count(engine, spend_daily) == 1


def test_upgrade_from_0001_keeps_keys(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from keel.store import KeyStore, generate_key, hash_key

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        config = Config()
        config.set_main_option("script_location", str(db._MIGRATIONS))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001_tenants_and_keys")
        # Rows as 0001 knew them: today's KeyStore writes columns it did not have.
        key = generate_key()
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO tenants (id, name, created_at) VALUES (1, 'acme', :t)"),
                {"t": "2030-01-01 12:00:00.000000"},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO api_keys (key_hash, key_prefix, tenant_id, created_at)"
                    " VALUES (:h, :p, 1, :t)"
                ),
                {"h": hash_key(key), "p": key[:12], "t": "2030-01-01 12:00:00.000000"},
            )

        upgrade(engine)

        record = KeyStore(engine).resolve(key)
        assert record is not None and record.tenant == "acme"
        RequestStore(engine).write_batch([make_record()], [True])
    finally:
        engine.dispose()
