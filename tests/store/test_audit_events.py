"""The event store on SQLite and PostgreSQL, and audit rows' limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from keystore_support import T0, Clock

from keel.errors import InvalidRequest
from keel.store import Event, EventStore, TenantStore


@pytest.fixture
def events(engine: sa.Engine) -> EventStore:
    return EventStore(engine, clock=Clock())


def test_add_returns_the_stored_event(events: EventStore) -> None:
    stored = events.add(
        tenant="acme",
        kind="budget_threshold",
        severity="warning",
        message="daily budget at 80%",
        data={"threshold": 0.8, "spent_usd": 4.0},
    )
    assert stored.at == T0 and stored.tenant == "acme" and stored.severity == "warning"
    assert stored.data == {"threshold": 0.8, "spent_usd": 4.0}
    assert events.list() == [stored]
    assert stored.as_dict()["at"] == T0.isoformat()


def test_list_filters_newest_first(events: EventStore) -> None:
    events.add(tenant="acme", kind="budget_threshold", message="50%", at=T0 - timedelta(days=2))
    events.add(tenant="beta", kind="cost_anomaly", message="3x", severity="critical")
    events.add(tenant="acme", kind="cost_anomaly", message="2x", at=T0 + timedelta(minutes=1))
    events.add(kind="cost_anomaly", message="global", at=T0 + timedelta(minutes=2))

    assert [e.message for e in events.list()] == ["global", "2x", "3x", "50%"]
    assert [e.message for e in events.list(tenant="acme")] == ["2x", "50%"]
    assert [e.message for e in events.list(kind="cost_anomaly", tenant="acme")] == ["2x"]
    assert [e.message for e in events.list(since=T0 - timedelta(hours=1))] == [
        "global",
        "2x",
        "3x",
    ]
    assert len(events.list(limit=2)) == 2


def test_add_many_in_one_transaction(events: EventStore) -> None:
    batch = [Event("budget_threshold", f"{n}%", tenant="acme") for n in (50, 80)]
    assert events.add_many(batch) == 2
    assert events.add_many([]) == 0
    assert sorted(e.message for e in events.list()) == ["50%", "80%"]


def test_bad_events_are_refused_and_long_messages_cut(events: EventStore) -> None:
    with pytest.raises(InvalidRequest) as caught:
        events.add(kind="x", message="m", severity="fatal")
    assert caught.value.param == "severity"
    with pytest.raises(InvalidRequest):
        events.add(kind="", message="m")
    stored = events.add(kind="x", message="y" * 5000)
    assert len(stored.message) == 1000 and stored.message.endswith("...")


def test_audit_reason_and_actor_are_bounded(engine: sa.Engine) -> None:
    store = TenantStore(engine)
    store.create("acme")
    with pytest.raises(InvalidRequest) as caught:
        store.suspend("acme", reason="x" * 1001)
    assert caught.value.param == "reason"
    with pytest.raises(InvalidRequest) as caught:
        store.suspend("acme", reason="ok", actor="")
    assert caught.value.param == "actor"
    assert not store.require("acme").suspended
