"""The rollout controller on scripted request rows: advance, hold, rollback, complete, lease."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keel.experiments.runtime import Controller, analysis_interval
from keel.experiments.spec import Experiment
from keel.store import ExperimentStore, make_engine, upgrade
from keel.store.tables import requests
from keel.tenants.alerts import Event, Notifier

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


class Clock:
    """A clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: sa.Engine, clock: Clock) -> ExperimentStore:
    return ExperimentStore(engine, clock=clock)


def canary(**ramp: Any) -> Experiment:
    return Experiment.model_validate(
        {
            "name": "canary",
            "alias": "fast",
            "unit": "request",
            "variants": [
                {"name": "control", "control": True, "alias": "fast"},
                {"name": "candidate", "alias": "smart"},
            ],
            "guards": [
                {"metric": "error_rate", "max_increase": 0.05},
                {"metric": "p95_latency_ms", "max_increase": 0.5},
            ],
            "ramp": {"steps": [10, 50, 100], "hold_s": 60, "min_samples": 40, **ramp},
        }
    )


def add_requests(
    engine: sa.Engine,
    variant: str,
    count: int,
    *,
    at: datetime,
    errors: int = 0,
    latency_ms: float = 200.0,
    experiment: str = "canary",
) -> None:
    """``count`` stored requests of ``variant``, the first ``errors`` of them failed."""
    rows = [
        {
            "request_id": f"r{next(_ids)}",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "started_at": at,
            "tenant": "acme",
            "operation": "chat",
            "stream": False,
            "http_status": 502 if i < errors else 200,
            "status": "error" if i < errors else "ok",
            "input_tokens": 10,
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 5,
            "usage_estimated": False,
            "cost_nano": 2000,
            "latency_ms": latency_ms + (i % 7),
            "attempt_count": 1,
            "experiment": experiment,
            "variant": variant,
            "shadow": False,
            "detail": {},
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(requests), rows)


def collecting_notifier() -> tuple[Notifier, list[Event]]:
    sent: list[Event] = []

    async def sink(event: Event) -> None:
        sent.append(event)

    return Notifier([sink]), sent


def test_the_analysis_interval_is_the_ramps_or_thirty_seconds() -> None:
    assert analysis_interval(canary(interval_s=10)) == 10
    split = canary().model_copy(update={"ramp": None, "split": {"control": 50, "candidate": 50}})
    assert analysis_interval(split) == 30


async def test_a_healthy_step_holds_then_advances(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary())
    add_requests(engine, "control", 360, at=clock.at(5))
    add_requests(engine, "candidate", 40, at=clock.at(6))
    controller = Controller(engine, clock=clock, owner="a")

    [early] = await controller.tick(clock.at(30))
    assert early.decision.action == "hold"
    assert early.event is not None and "30 s of 60 s" in early.event.reasons[0]

    [due] = await controller.tick(clock.at(61))
    assert due.decision.action == "advance"
    assert due.record.step_index == 1
    assert due.record.shares == {"control": 50.0, "candidate": 50.0}
    assert due.record.step_started_at == clock.now
    event = due.event
    assert event is not None and event.actor == "controller"
    assert event.numbers["variants"]["candidate"]["n"] == 40
    assert event.numbers["variants"]["control"]["n"] == 360
    assert {g["metric"]: g["status"] for g in event.numbers["guards"]} == {
        "error_rate": "ok",
        "p95_latency_ms": "ok",
    }
    assert [e.action for e in store.events("canary")] == ["advance", "hold", "start"]


async def test_a_repeated_hold_is_not_written_again(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary(interval_s=10))
    controller = Controller(engine, clock=clock, owner="a")
    first = await controller.tick(clock.at(10))
    add_requests(engine, "control", 9, at=clock.at(12))
    add_requests(engine, "candidate", 1, at=clock.at(12))
    second = await controller.tick(clock.at(20))
    third = await controller.tick(clock.at(30))

    assert [o.decision.action for o in (*first, *second, *third)] == ["hold"] * 3
    assert first[0].event is not None
    assert second[0].event is None and third[0].event is None  # same reason, new numbers
    assert [e.action for e in store.events("canary")] == ["hold", "start"]


async def test_a_failing_candidate_is_rolled_back_and_announced(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary())
    add_requests(engine, "control", 900, errors=9, at=clock.at(5))
    add_requests(engine, "candidate", 100, errors=40, at=clock.at(6))
    notifier, sent = collecting_notifier()
    controller = Controller(engine, notifier, clock=clock, owner="a")

    [outcome] = await controller.tick(clock.at(30))
    await notifier.drain()

    assert outcome.decision.action == "rollback"
    assert outcome.record.status == "rolled_back"
    assert outcome.record.shares == {"control": 100.0, "candidate": 0.0}
    assert outcome.event is not None
    assert "guard error_rate failed" in outcome.event.reasons[0]
    [guard] = [g for g in outcome.event.numbers["guards"] if g["metric"] == "error_rate"]
    assert guard["status"] == "failed" and guard["candidate_value"] == 0.4
    [alert] = sent
    assert (alert.kind, alert.severity, alert.tenant) == ("rollback", "critical", "*")
    assert "experiment canary rolled back to control by controller" in alert.message
    assert alert.data["numbers"]["variants"]["candidate"]["errors"] == 40
    # Gateways stop applying it; the controller leaves it alone from now on.
    assert store.active() == []
    assert await controller.tick(clock.at(120)) == []


async def test_a_broken_split_is_rolled_back_for_sample_ratio_mismatch(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary())
    add_requests(engine, "control", 500, at=clock.at(5))  # 10 % should be candidate's
    add_requests(engine, "candidate", 200, at=clock.at(6))
    [outcome] = await Controller(engine, clock=clock, owner="a").tick(clock.at(30))
    assert outcome.decision.action == "rollback"
    assert outcome.event is not None and "sample-ratio mismatch" in outcome.event.reasons[0]
    assert outcome.event.numbers["srm"]["p_value"] < 0.001


async def test_the_last_step_completes(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary(steps=[100], min_samples=30))
    add_requests(engine, "candidate", 30, at=clock.at(5))
    [outcome] = await Controller(engine, clock=clock, owner="a").tick(clock.at(61))
    assert outcome.decision.action == "complete"
    assert outcome.record.status == "completed"
    assert outcome.record.shares == {"control": 0.0, "candidate": 100.0}


async def test_only_one_of_two_controllers_decides(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary())
    add_requests(engine, "control", 900, errors=9, at=clock.at(5))
    add_requests(engine, "candidate", 100, errors=40, at=clock.at(6))
    first, sent_first = collecting_notifier()
    second, sent_second = collecting_notifier()
    a = Controller(engine, first, clock=clock, owner="replica-a")
    b = Controller(engine, second, clock=clock, owner="replica-b")

    now = clock.at(30)
    outcomes = [*(await a.tick(now)), *(await b.tick(now))]
    await first.drain()
    await second.drain()

    assert [o.decision.action for o in outcomes] == ["rollback"]
    assert len(sent_first) + len(sent_second) == 1
    assert [e.action for e in store.events("canary")] == ["rollback", "start"]


async def test_the_lease_spaces_analyses_and_passes_on(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary(interval_s=30))
    a = Controller(engine, clock=clock, owner="replica-a")
    b = Controller(engine, clock=clock, owner="replica-b")
    assert len(await a.tick(clock.at(1))) == 1
    assert await a.tick(clock.at(10)) == []  # its own lease: not due yet
    assert await b.tick(clock.at(20)) == []
    # replica-a went away; replica-b takes over once the lease lapses.
    assert len(await b.tick(clock.at(31))) == 1
    assert store.get("canary").lease_owner == "replica-b"


async def test_paused_experiments_are_not_analysed(
    engine: sa.Engine, store: ExperimentStore, clock: Clock
) -> None:
    store.start(canary())
    store.pause("canary", "cli:bob")
    assert await Controller(engine, clock=clock, owner="a").tick(clock.at(61)) == []
    assert [e.action for e in store.events("canary")] == ["pause", "start"]
