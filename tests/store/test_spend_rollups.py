"""Spend rollups on SQLite and PostgreSQL: exact sums, grouping, cost per useful output, mix."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from request_support import T0, error_record, make_record

from keel.errors import InvalidRequest
from keel.store import RequestStore
from keel.store.tables import SPEND_COUNTERS, requests, spend_daily
from keel.telemetry.record import Usage

DAY = T0.date()


@pytest.fixture
def rs(engine: sa.Engine) -> RequestStore:
    return RequestStore(engine)


def test_rollup_sums_equal_the_sum_of_the_rows(rs: RequestStore, engine: sa.Engine) -> None:
    rng = random.Random(7)
    records = [
        make_record(
            at=timedelta(hours=rng.randint(-48, 0)),
            tenant=rng.choice(["acme", "globex", None]),
            feature=rng.choice(["chat", "search", None]),
            variant=rng.choice(["a", "b", None]),
            usage=Usage(
                input_tokens=(n := rng.randint(10, 900)),
                cached_input_tokens=rng.randint(0, n),
                output_tokens=rng.randint(0, 300),
            ),
            cost_usd=rng.choice([None, rng.random() / 100]),
            status=rng.choice(["ok", "ok", "error"]),
        )
        for _ in range(300)
    ]
    # Several batches, so later ones go through ON CONFLICT ... DO UPDATE.
    for start in range(0, 300, 70):
        rs.write_batch(records[start : start + 70], [True] * len(records[start : start + 70]))

    row_sums = [
        sa.func.count(),
        sa.func.sum(sa.case((requests.c.status == "error", 1), else_=0)),
        sa.func.sum(requests.c.input_tokens),
        sa.func.sum(requests.c.cached_input_tokens),
        sa.func.sum(requests.c.cache_write_tokens),
        sa.func.sum(requests.c.output_tokens),
        sa.func.coalesce(sa.func.sum(requests.c.cost_nano), 0),
        sa.func.sum(sa.case((requests.c.cost_nano.is_(None), 1), else_=0)),
    ]
    with engine.connect() as conn:
        from_rows = [int(v) for v in conn.execute(sa.select(*row_sums)).one()]
        rollup_sums = [sa.func.sum(spend_daily.c[c]) for c in SPEND_COUNTERS]
        from_rollups = [int(v) for v in conn.execute(sa.select(*rollup_sums)).one()]
        rollup_rows = conn.execute(sa.select(sa.func.count()).select_from(spend_daily)).scalar()
    assert from_rollups == from_rows
    assert from_rows[0] == 300 and 0 < from_rows[7] < 300
    assert rollup_rows is not None and rollup_rows < 300  # rolled up, not one row each


def test_spend_by_tenant_and_feature_over_a_window(rs: RequestStore) -> None:
    rs.write_batch(
        [
            make_record(tenant="acme", feature="chat", cost_usd=0.25),
            make_record(tenant="acme", feature="chat", cost_usd=0.25, at=timedelta(days=1)),
            make_record(tenant="acme", feature="search", cost_usd=1.0),
            make_record(tenant="globex", feature=None, cost_usd=None),
            error_record(tenant="globex", feature=None),
            make_record(tenant="acme", feature="chat", cost_usd=9.0, at=timedelta(days=-3)),
            make_record(tenant="acme", feature="chat", cost_usd=9.0, at=timedelta(days=5)),
        ],
        [False] * 7,  # rollups do not depend on sampling
    )

    rows = rs.spend(["tenant", "feature"], since=DAY, until=DAY + timedelta(days=1))

    assert [(r.group, r.requests, r.errors, r.cost_usd, r.unknown_cost_requests) for r in rows] == [
        ({"tenant": "acme", "feature": "search"}, 1, 0, 1.0, 0),
        ({"tenant": "acme", "feature": "chat"}, 2, 0, 0.5, 0),
        ({"tenant": "globex", "feature": None}, 2, 1, 0.0, 1),
    ]
    only_acme = rs.spend(["feature"], since=DAY, until=DAY, tenant="acme")
    assert {r.group["feature"]: r.cost_usd for r in only_acme} == {"search": 1.0, "chat": 0.25}
    by_day = rs.spend(["day"], since=DAY - timedelta(days=3))
    assert [(r.group["day"], r.requests) for r in by_day] == [
        (DAY - timedelta(days=3), 1),
        (DAY, 4),
        (DAY + timedelta(days=1), 1),
        (DAY + timedelta(days=5), 1),
    ]
    assert isinstance(by_day[0].group["day"], date)
    assert rs.spend(["tenant"], since=DAY + timedelta(days=30)) == []


def test_spend_rejects_unknown_dimensions_by_name(rs: RequestStore) -> None:
    with pytest.raises(InvalidRequest) as caught:
        rs.spend(["tenant", "colour", "model"], since=DAY)
    assert caught.value.param == "by"
    assert "'colour'" in caught.value.message and "'model'" in caught.value.message
    with pytest.raises(InvalidRequest) as window:
        rs.spend(["tenant"], since=DAY, until=DAY - timedelta(days=1))
    assert window.value.param == "until"


def test_useful_outputs_per_prompt_version(rs: RequestStore) -> None:
    v1 = [make_record(prompt_version="1.0.0", cost_usd=0.5) for _ in range(4)]
    v2 = [make_record(prompt_version="2.0.0", cost_usd=0.5) for _ in range(2)]
    rs.write_batch(v1 + v2, [True] * 6)

    def rate(record_id: str, score: float) -> None:
        rs.add_feedback(record_id, tenant=None, score=score, comment=None, tags=[])

    rate(v1[0].request_id, 1)
    rate(v1[1].request_id, 1)
    rate(v1[1].request_id, 0.8)  # twice positive still counts once
    rate(v1[2].request_id, 1)
    rate(v1[2].request_id, 0)  # the latest wins: no longer useful
    rate(v1[3].request_id, 0)
    rate(v1[3].request_id, 1)  # ... and the other way round

    rows = {r.group["prompt_version"]: r for r in rs.useful_outputs(["prompt_version"], since=DAY)}

    assert rows["1.0.0"].useful == 3 and rows["1.0.0"].cost_usd == 2.0
    assert rows["1.0.0"].cost_per_useful == pytest.approx(2.0 / 3)
    assert rows["2.0.0"].useful == 0 and rows["2.0.0"].cost_per_useful is None
    by_alias = rs.useful_outputs(["alias", "prompt_version"], since=DAY, tenant="globex")
    assert by_alias == []
    with pytest.raises(InvalidRequest) as caught:
        rs.useful_outputs(["tenant"], since=DAY)
    assert caught.value.param == "by"


def test_recent_mix_per_provider_model(rs: RequestStore) -> None:
    rs.write_batch(
        [
            make_record(provider_model="gpt-4o-mini", cost_usd=0.1),
            make_record(provider_model="gpt-4o-mini", cost_usd=0.1),
            make_record(provider_model="claude-3-5-haiku", cost_usd=None),
            make_record(provider_model="gpt-4o", cost_usd=2.0, at=timedelta(days=-10)),
        ],
        [False] * 4,
    )

    mix = rs.recent_mix(T0 - timedelta(days=1))

    assert [(m.provider_model, m.requests, m.unknown_cost_requests) for m in mix] == [
        ("gpt-4o-mini", 2, 0),
        ("claude-3-5-haiku", 1, 1),
    ]
    assert mix[0].cost_usd == pytest.approx(0.2) and mix[0].input_tokens == 200
    assert rs.recent_mix(T0 - timedelta(days=1), tenant="nobody") == []
