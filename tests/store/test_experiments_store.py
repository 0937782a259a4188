"""Experiments on SQLite and PostgreSQL: start, decisions, operator actions, feed, lease."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keel.errors import InvalidRequest, NotFound
from keel.experiments.spec import Experiment
from keel.prompts.model import PromptFile
from keel.store import (
    AuditStore,
    ExperimentStore,
    PromptRegistry,
    record_eval_run,
    upgrade,
)
from keel.store.tables import experiment_events, experiments

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass(frozen=True)
class Decision:
    action: str
    reasons: tuple[str, ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)


def ramp(name: str = "rag-v3", **changes: Any) -> Experiment:
    raw: dict[str, Any] = {
        "name": name,
        "prompt": "rag-answer",
        "variants": [
            {"name": "control", "control": True, "prompt_version": "1.0.0"},
            {"name": "candidate", "prompt_version": "1.1.0"},
        ],
        "guards": [{"metric": "error_rate", "max_increase": 0.02}],
        "ramp": {"steps": [1, 5, 100], "hold_s": 60, "min_samples": 10},
    }
    raw.update(changes)
    return Experiment.model_validate(raw)


def split(name: str = "ab-models") -> Experiment:
    return Experiment.model_validate(
        {
            "name": name,
            "alias": "fast",
            "variants": [
                {"name": "a", "control": True, "alias": "fast"},
                {"name": "b", "alias": "smart"},
            ],
            "split": {"a": 50, "b": 50},
        }
    )


def shadow(name: str = "shadow-smart") -> Experiment:
    return Experiment.model_validate(
        {
            "name": name,
            "alias": "fast",
            "variants": [
                {"name": "control", "control": True, "alias": "fast"},
                {"name": "candidate", "alias": "smart"},
            ],
            "shadow": {"share": 0.2},
        }
    )


def prompt(version: str) -> PromptFile:
    return PromptFile.model_validate(
        {
            "name": "rag-answer",
            "version": version,
            "model": "fast",
            "messages": [{"role": "user", "content": "{{ question }} " + version}],
            "variables": {"question": {"type": "string"}},
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: sa.Engine, clock: Clock) -> ExperimentStore:
    registry = PromptRegistry(engine, clock=clock)
    registry.push([prompt("1.0.0"), prompt("1.1.0")], actor="cli:alice")
    record_eval_run(
        engine,
        suite="golden",
        prompt_name="rag-answer",
        prompt_version="1.0.0",
        dataset_hash="sha256:d",
        passed=True,
    )
    registry.promote("rag-answer", "1.0.0", "production", "cli:alice")
    return ExperimentStore(engine, clock=clock, aliases=["fast", "smart"])


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# --- start ------------------------------------------------------------------------------


def test_start_stores_each_mode_with_its_initial_shares(store: ExperimentStore) -> None:
    ramped = store.start(ramp(), actor="cli:alice")
    assert ramped.status == "running" and ramped.mode == "ramp"
    assert ramped.step_index == 0
    assert ramped.shares == {"control": 99.0, "candidate": 1.0}
    assert ramped.created_by == "cli:alice"
    assert ramped.spec == ramp()
    assert store.start(split()).shares == {"a": 50.0, "b": 50.0}
    assert store.start(shadow()).shares == {"control": 100.0, "candidate": 0.0}

    assert [r.name for r in store.active()] == ["ab-models", "rag-v3", "shadow-smart"]
    assert [r.version for r in store.changed_since(0)] == [1, 2, 3]
    [started] = store.events("rag-v3")
    assert (started.action, started.actor, started.shares) == (
        "start",
        "cli:alice",
        {"control": 99.0, "candidate": 1.0},
    )
    [audit] = AuditStore(store._engine).list(target="experiment:rag-v3")
    assert audit.action == "experiment.start" and audit.before is None


def test_start_refuses_a_running_name_and_replaces_a_finished_one(
    store: ExperimentStore,
) -> None:
    store.start(ramp())
    with pytest.raises(InvalidRequest) as caught:
        store.start(ramp())
    assert caught.value.code == "experiment_running"
    store.rollback("rag-v3", "cli:bob", reason="bad answers")

    again = store.start(ramp(), actor="cli:carol")
    assert again.status == "running" and again.version == 3
    assert again.shares == {"control": 99.0, "candidate": 1.0}
    assert [e.action for e in store.events("rag-v3")] == ["start", "rollback", "start"]


def test_start_checks_prompt_versions_and_aliases(store: ExperimentStore) -> None:
    missing = ramp(
        variants=[
            {"name": "control", "control": True, "prompt_version": "1.0.0"},
            {"name": "candidate", "prompt_version": "9.9.9"},
        ]
    )
    with pytest.raises(InvalidRequest) as caught:
        store.start(missing)
    assert caught.value.param == "variants.candidate.prompt_version"
    assert "1.0.0, 1.1.0" in caught.value.message

    unknown = split().model_copy(update={"alias": "huge"})
    with pytest.raises(InvalidRequest) as caught:
        store.start(unknown)
    assert caught.value.param == "alias"
    assert store.list() == []


# --- decisions ---------------------------------------------------------------------------


def test_advance_moves_to_the_next_step_and_bumps_the_version(
    store: ExperimentStore, engine: sa.Engine
) -> None:
    started = store.start(ramp())
    numbers = {"candidate": {"n": 40, "error_rate": 0.0}, "control": {"n": 3960}}
    applied = store.apply("rag-v3", Decision("advance", ("guards pass",), numbers))

    record, event = applied.record, applied.event
    assert event is not None
    assert record.step_index == 1
    assert record.shares == {"control": 95.0, "candidate": 5.0}
    assert record.step_started_at > started.step_started_at
    assert record.version == started.version + 1
    assert (event.action, event.actor, event.reasons) == ("advance", "controller", ["guards pass"])
    assert event.numbers["candidate"] == {"n": 40, "error_rate": 0.0}
    assert event.numbers["from"]["shares"] == {"control": 99.0, "candidate": 1.0}
    assert store.changed_since(started.version) == [record]
    assert store.changed_since(started.updated_at) == [record]
    assert store.last_version() == record.version
    assert count(engine, experiment_events) == 2


def test_a_hold_is_written_only_when_its_reason_changes(store: ExperimentStore) -> None:
    started = store.start(ramp())
    first = store.apply("rag-v3", Decision("hold", ("candidate n=4 below min_samples 10",)))
    again = store.apply("rag-v3", Decision("hold", ("candidate n=7 below min_samples 10",)))
    other = store.apply("rag-v3", Decision("hold", ("hold_s: 20s of 60s",)))

    assert first.event is not None and first.event.action == "hold"
    assert again.event is None
    assert other.event is not None
    assert [e.action for e in store.events("rag-v3")] == ["hold", "hold", "start"]
    assert store.get("rag-v3").version == started.version  # a hold changes nothing


def test_rollback_gives_the_control_everything(store: ExperimentStore) -> None:
    store.start(ramp())
    store.apply("rag-v3", Decision("advance"))
    numbers = {"srm_p": 1e-6}
    applied = store.apply("rag-v3", Decision("rollback", ("sample ratio mismatch",), numbers))

    assert applied.record.status == "rolled_back"
    assert applied.record.shares == {"control": 100.0, "candidate": 0.0}
    assert applied.event is not None and applied.event.numbers["srm_p"] == 1e-6
    assert store.active() == []
    assert store.changed_since(2)[0].status == "rolled_back"
    # An ended experiment takes no more decisions.
    assert store.apply("rag-v3", Decision("advance")).event is None
    audit = AuditStore(store._engine).list(target="experiment:rag-v3", limit=1)[0]
    assert audit.action == "experiment.rollback" and audit.reason == "sample ratio mismatch"


def test_a_stale_decision_is_dropped(store: ExperimentStore) -> None:
    started = store.start(ramp())
    store.pause("rag-v3", "cli:bob")
    store.resume("rag-v3", "cli:bob")
    stale = store.apply("rag-v3", Decision("advance"), expect_version=started.version)
    assert stale.event is None and stale.record.step_index == 0


def test_completing_a_prompt_ramp_promotes_the_candidate(
    store: ExperimentStore, engine: sa.Engine
) -> None:
    store.start(ramp())
    store.apply("rag-v3", Decision("advance"))
    store.apply("rag-v3", Decision("advance"))
    assert store.get("rag-v3").shares == {"control": 0.0, "candidate": 100.0}
    done = store.apply("rag-v3", Decision("complete", ("held at 100 %",)))

    assert done.record.status == "completed"
    assert done.record.shares == {"control": 0.0, "candidate": 100.0}
    assert done.event is not None
    promotion = done.event.numbers["promotion"]
    assert promotion["version"] == "1.1.0" and promotion["forced"] is True
    registry = PromptRegistry(engine)
    assert registry.resolve("rag-answer", "production").version == "1.1.0"
    [move] = registry.history("rag-answer", limit=1)
    assert (move.actor, move.reason, move.forced) == (
        "controller",
        "rollout rag-v3 completed",
        True,
    )


def test_advancing_past_the_last_step_completes(store: ExperimentStore) -> None:
    store.start(ramp(ramp={"steps": [10, 100]}))
    store.advance("rag-v3", "cli:bob")
    done = store.advance("rag-v3", "cli:bob", reason="looks good")
    assert done.record.status == "completed"
    assert done.event is not None and done.event.action == "complete"
    assert done.event.reasons == ["looks good"]


# --- operator actions --------------------------------------------------------------------


def test_pause_resume_advance_and_rollback_by_hand(store: ExperimentStore) -> None:
    store.start(ramp())
    paused = store.pause("rag-v3", "cli:bob", reason="incident")
    assert paused.record.status == "paused"
    assert [r.name for r in store.active()] == ["rag-v3"]  # paused keeps its shares
    with pytest.raises(InvalidRequest) as caught:
        store.pause("rag-v3", "cli:bob")
    assert "it is paused" in caught.value.message
    # The controller leaves a paused experiment alone.
    assert store.apply("rag-v3", Decision("rollback")).event is None

    advanced = store.advance("rag-v3", "cli:bob")
    assert advanced.record.status == "paused" and advanced.record.step_index == 1
    assert store.resume("rag-v3", "cli:bob").record.status == "running"
    with pytest.raises(InvalidRequest):
        store.rollback("rag-v3", "cli:bob", reason=" ")
    rolled = store.rollback("rag-v3", "cli:bob", reason="thumbs down up 8 points")
    assert rolled.record.status == "rolled_back"
    assert [(e.action, e.actor) for e in store.events("rag-v3")][:2] == [
        ("rollback", "cli:bob"),
        ("resume", "cli:bob"),
    ]
    with pytest.raises(InvalidRequest) as caught:
        store.resume("rag-v3", "cli:bob")
    assert caught.value.code == "experiment_state"


def test_only_ramps_advance_and_unknown_names_are_not_found(store: ExperimentStore) -> None:
    store.start(split())
    with pytest.raises(InvalidRequest) as caught:
        store.advance("ab-models", "cli:bob")
    assert "only ramps advance" in caught.value.message
    with pytest.raises(NotFound):
        store.pause("nope", "cli:bob")
    with pytest.raises(NotFound):
        store.get("nope")


# --- lease -------------------------------------------------------------------------------


def test_one_controller_holds_the_lease_until_it_lapses(store: ExperimentStore) -> None:
    store.start(ramp())
    until = T0 + timedelta(minutes=5)
    assert store.try_lease("rag-v3", "replica-a", now=T0, until=until)
    assert not store.try_lease("rag-v3", "replica-b", now=T0 + timedelta(seconds=1), until=until)
    assert store.try_lease("rag-v3", "replica-b", now=until, until=until + timedelta(minutes=1))
    assert store.get("rag-v3").lease_owner == "replica-b"
    store.pause("rag-v3", "cli:bob")
    later = until + timedelta(hours=1)
    assert not store.try_lease("rag-v3", "replica-a", now=later, until=later)


def test_migration_0006_downgrades_and_upgrades_again(
    store: ExperimentStore, engine: sa.Engine
) -> None:
    from alembic import command
    from alembic.config import Config

    from keel.store import db

    store.start(ramp())
    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005_judge_cache")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        names = set(inspector.get_table_names())
        columns = {c["name"] for c in inspector.get_columns("requests")}
    assert "experiments" not in names and "experiment_events" not in names
    assert "experiment" not in columns

    upgrade(engine)
    assert count(engine, experiments) == 0
    assert store.start(ramp()).version == 1


# --- metrics from stored requests ---------------------------------------------------------


def test_variant_metrics_read_the_window_through_the_write_path(
    store: ExperimentStore, engine: sa.Engine
) -> None:
    from request_support import T0 as AT
    from request_support import error_record, make_record

    from keel.experiments.metrics_query import variant_metrics
    from keel.store import RequestStore

    spec = shadow()
    tagged = {"experiment": spec.name}
    records = [
        make_record(request_id="c1", variant="control", end_user="u1", **tagged),
        make_record(request_id="c2", variant="control", end_user="u2", ttft_ms=80.0, **tagged),
        error_record(request_id="c3", variant="control", end_user="u2", **tagged),
        make_record(
            request_id="s1",
            variant="candidate",
            shadow=True,
            cost_usd=None,
            guardrail="flag",
            extra={"judge": 1.0, "similarity": 0.8},
            **tagged,
        ),
        # The variant column of a shadow copy does not matter: it is the candidate's.
        make_record(
            request_id="s2", variant="control", shadow=True, extra={"judge": 0.5}, **tagged
        ),
        make_record(
            request_id="s3",
            variant="candidate",
            shadow=True,
            extra={"judge": {"score": 0}},
            **tagged,
        ),
        make_record(request_id="old", variant="control", at=timedelta(hours=-1), **tagged),
        make_record(request_id="other", variant="control", experiment="another"),
    ]
    writes = RequestStore(engine)
    writes.write_batch(records, [True] * len(records))
    for request_id, score in (("c1", 1.0), ("c1", 0.0), ("c2", 1.0), ("s1", 0.0)):
        writes.add_feedback(request_id, tenant=None, score=score, comment=None, tags=[])

    found = variant_metrics(engine, spec.name, AT, spec=spec)

    control, candidate = found["control"], found["candidate"]
    assert (control.n, control.errors, control.units) == (3, 1, 2)
    assert len(control.latencies_ms) == 2  # timings of completed requests only
    assert list(control.ttft_ms) == [80.0]
    assert (control.rated, control.thumbs_down) == (2, 1)  # c1's latest word is thumbs down
    assert (candidate.n, candidate.cost_unknown, candidate.guardrail_flags) == (3, 1, 1)
    assert sorted(candidate.judge_scores) == [0.0, 0.5, 1.0]
    assert list(candidate.costs_usd) == [0.000123, 0.000123]
    assert (candidate.rated, candidate.thumbs_down) == (1, 1)
    assert candidate.units == 0  # shadow copies are no assignment units

    later = variant_metrics(engine, spec.name, AT + timedelta(seconds=1), spec=spec)
    assert later["control"].n == 0 and later["candidate"].n == 0
