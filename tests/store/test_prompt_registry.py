"""The prompt registry on SQLite and PostgreSQL: push, labels, promote gate, rollback, feed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keel.errors import InvalidRequest, NotFound
from keel.prompts.model import PromptFile, content_hash
from keel.store import AuditStore, EvalRunStore, PromptRegistry, make_engine, record_eval_run
from keel.store.tables import audit_log, prompt_label_moves, prompt_labels, prompt_versions

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def prompt(name: str = "rag-answer", version: str = "1.0.0", **changes: Any) -> PromptFile:
    raw: dict[str, Any] = {
        "name": name,
        "version": version,
        "description": "Answers from the retrieved context.",
        "owner": "search-team",
        "model": "fast",
        "params": {"temperature": 0.2},
        "messages": [
            {"role": "system", "content": "Answer only from the context."},
            {"role": "user", "content": "{{ question }}"},
        ],
        "variables": {"question": {"type": "string"}},
        "tags": ["rag"],
    }
    raw.update(changes)
    return PromptFile.model_validate(raw)


@pytest.fixture
def registry(engine: sa.Engine) -> PromptRegistry:
    return PromptRegistry(engine, clock=Clock())


def passing_run(engine: sa.Engine, name: str = "rag-answer", version: str = "1.0.0") -> int:
    return record_eval_run(
        engine,
        suite="rag-golden",
        prompt_name=name,
        prompt_version=version,
        dataset_hash="sha256:d1",
        passed=True,
        summary={"pass_rate": 0.97},
        cost_usd=0.12,
    ).id


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# --- push -------------------------------------------------------------------------------


def test_push_stores_new_versions_and_repushing_is_a_no_op(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    first = registry.push([prompt(), prompt("classify", "0.1.0")], actor="cli:alice")
    assert [(r.name, r.version, r.status) for r in first] == [
        ("rag-answer", "1.0.0", "new"),
        ("classify", "0.1.0", "new"),
    ]
    assert first[0].content_hash == content_hash(prompt())

    again = registry.push([prompt(), prompt("classify", "0.1.0")], actor="cli:bob")
    assert [r.status for r in again] == ["unchanged", "unchanged"]
    # Description, owner and tags are not content: a changed description is still the same version.
    assert registry.push([prompt(description="Reworded.")])[0].status == "unchanged"
    assert count(engine, prompt_versions) == 2

    [stored] = registry.versions("rag-answer")
    assert stored.created_by == "cli:alice" and stored.owner == "search-team"
    assert stored.tags == ["rag"] and stored.content["params"] == {"temperature": 0.2}
    assert stored.prompt() == prompt()
    pushes = AuditStore(engine).list(action="prompt.push")
    assert {row.target for row in pushes} == {"prompt:rag-answer", "prompt:classify"}


def test_a_conflicting_version_refuses_the_whole_push_with_the_diff(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    registry.push([prompt()])
    mutated = prompt(params={"temperature": 0.9})

    with pytest.raises(InvalidRequest) as caught:
        registry.push([prompt("classify", "0.1.0"), prompt(version="1.1.0"), mutated])

    error = caught.value
    assert error.code == "prompt_version_conflict" and error.param == "version"
    assert "rag-answer 1.0.0 is already pushed with other content" in error.message
    assert "0.2" in error.message and "0.9" in error.message  # the diff
    # Nothing of the push was written, not even the prompts without a conflict.
    assert [v.version for v in registry.versions("rag-answer")] == ["1.0.0"]
    assert registry.versions("classify") == []
    assert count(engine, prompt_versions) == 1
    assert registry.get("rag-answer", "1.0.0").content["params"] == {"temperature": 0.2}


def test_the_same_version_twice_in_one_push_with_other_content_is_refused(
    registry: PromptRegistry,
) -> None:
    with pytest.raises(InvalidRequest, match="appears twice"):
        registry.push([prompt(), prompt(params={"temperature": 1.0})])
    assert registry.list_prompts() == []
    # Twice with the same content is one version.
    assert [r.status for r in registry.push([prompt(), prompt()])] == ["new"]


def test_versions_sort_by_semver_and_reads_name_what_is_missing(
    registry: PromptRegistry,
) -> None:
    registry.push([prompt(version=v) for v in ("1.10.0", "1.2.0", "2.0.0-rc.1", "2.0.0")])
    assert [v.version for v in registry.versions("rag-answer")] == [
        "1.2.0",
        "1.10.0",
        "2.0.0-rc.1",
        "2.0.0",
    ]
    assert registry.versions("nope") == []
    with pytest.raises(NotFound) as missing:
        registry.get("rag-answer", "3.0.0")
    assert "no version 3.0.0; pushed: 1.2.0, 1.10.0, 2.0.0-rc.1, 2.0.0" in missing.value.message
    assert missing.value.param == "version"
    with pytest.raises(NotFound) as unknown:
        registry.get("nope", "1.0.0")
    assert unknown.value.param == "name"
    [summary] = registry.list_prompts()
    assert (summary.name, summary.versions, summary.latest) == ("rag-answer", 4, "2.0.0")


# --- promote ----------------------------------------------------------------------------


def test_promote_is_refused_without_a_passing_eval_run(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    registry.push([prompt()])
    with pytest.raises(InvalidRequest, match="no eval run is recorded") as caught:
        registry.promote("rag-answer", "1.0.0", "production", actor="cli:alice")
    assert caught.value.code == "promotion_not_qualified" and caught.value.param == "version"

    record_eval_run(
        engine,
        suite="rag-golden",
        prompt_name="rag-answer",
        prompt_version="1.0.0",
        dataset_hash="sha256:d1",
        passed=False,
        summary={"pass_rate": 0.5},
    )
    with pytest.raises(InvalidRequest, match="failed its gate"):
        registry.promote("rag-answer", "1.0.0", "production", actor="cli:alice")
    # A passing run of other content (an unpushed edit) qualifies nothing.
    record_eval_run(
        engine,
        suite="rag-golden",
        prompt_name="rag-answer",
        prompt_version="1.0.0",
        prompt_hash="sha256:other",
        dataset_hash="sha256:d1",
        passed=True,
    )
    with pytest.raises(InvalidRequest, match="scored other content"):
        registry.promote("rag-answer", "1.0.0", "production", actor="cli:alice")
    assert registry.labels("rag-answer") == []
    assert count(engine, prompt_label_moves) == 0


def test_promote_with_a_passing_run_moves_the_label_and_records_the_run(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    registry.push([prompt()])
    run = passing_run(engine)

    move = registry.promote("rag-answer", "1.0.0", "production", actor="cli:alice", reason="ship")
    assert move is not None
    assert (move.from_version, move.to_version, move.eval_run_id) == (None, "1.0.0", run)
    assert (move.kind, move.forced, move.actor, move.reason) == (
        "promote",
        False,
        "cli:alice",
        "ship",
    )
    assert registry.resolve("rag-answer", "production").version == "1.0.0"
    [label] = registry.labels("rag-answer")
    assert (label.label, label.version) == ("production", "1.0.0")

    # Promoting to where the label already points writes nothing.
    assert registry.promote("rag-answer", "1.0.0", "production", actor="cli:bob") is None
    assert count(engine, prompt_label_moves) == 1

    [audit] = AuditStore(engine).list(action="prompt.promote")
    assert (audit.target, audit.actor, audit.reason) == ("prompt:rag-answer", "cli:alice", "ship")
    assert audit.before is None
    assert audit.after == {
        "label": "production",
        "version": "1.0.0",
        "eval_run_id": run,
        "forced": False,
    }
    assert EvalRunStore(engine).get(run) is not None


def test_forced_promotion_needs_a_reason_and_is_recorded_and_audited(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    registry.push([prompt()])
    with pytest.raises(InvalidRequest) as caught:
        registry.promote("rag-answer", "1.0.0", "production", actor="cli:alice", force=True)
    assert caught.value.param == "reason"

    move = registry.promote(
        "rag-answer", "1.0.0", "production", actor="cli:alice", force=True, reason="hotfix"
    )
    assert move is not None and move.forced and move.eval_run_id is None
    [audit] = AuditStore(engine).list(action="prompt.promote")
    assert audit.after is not None and audit.after["forced"] is True
    assert audit.reason == "hotfix"


def test_promoting_unknown_versions_and_bad_labels_is_refused(registry: PromptRegistry) -> None:
    registry.push([prompt()])
    with pytest.raises(NotFound) as version:
        registry.promote("rag-answer", "9.9.9", "production", force=True, reason="x")
    assert version.value.param == "version"
    with pytest.raises(NotFound) as name:
        registry.promote("nope", "1.0.0", "production", force=True, reason="x")
    assert name.value.param == "name"
    with pytest.raises(InvalidRequest) as label:
        registry.promote("rag-answer", "1.0.0", "Prod Uction", force=True, reason="x")
    assert label.value.param == "label"
    with pytest.raises(InvalidRequest) as actor:
        registry.promote("rag-answer", "1.0.0", "staging", actor=" ", force=True, reason="x")
    assert actor.value.param == "actor"


# --- rollback and history ---------------------------------------------------------------


def test_rollback_moves_the_label_back_one_version_at_a_time(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    registry.push([prompt(version=v) for v in ("1.0.0", "1.1.0", "1.2.0")])
    runs = {v: passing_run(engine, version=v) for v in ("1.0.0", "1.1.0", "1.2.0")}
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        registry.promote("rag-answer", version, "production", actor="cli:alice")
    registry.promote("rag-answer", "1.0.0", "staging", actor="cli:alice")

    back = registry.rollback("rag-answer", actor="cli:bob", reason="answers got worse")
    assert (back.from_version, back.to_version, back.kind) == ("1.2.0", "1.1.0", "rollback")
    assert back.eval_run_id == runs["1.1.0"] and not back.forced
    assert registry.resolve("rag-answer", "production").version == "1.1.0"

    # A second rollback goes further back; it never returns to the rolled-back 1.2.0.
    assert registry.rollback("rag-answer", actor="cli:bob").to_version == "1.0.0"
    assert registry.resolve("rag-answer", "staging").version == "1.0.0"  # untouched
    with pytest.raises(InvalidRequest, match="nothing to roll back to") as caught:
        registry.rollback("rag-answer", actor="cli:bob")
    assert caught.value.param == "label"

    [audit, *_] = AuditStore(engine).list(action="prompt.rollback")
    assert audit.before == {"label": "production", "version": "1.1.0"}
    assert audit.after is not None and audit.after["version"] == "1.0.0"


def test_rollback_of_a_label_that_never_moved_is_an_error(registry: PromptRegistry) -> None:
    registry.push([prompt()])
    with pytest.raises(NotFound) as caught:
        registry.rollback("rag-answer", "production", actor="cli:bob")
    assert caught.value.param == "label"
    with pytest.raises(NotFound) as unknown:
        registry.rollback("nope", actor="cli:bob")
    assert unknown.value.param == "name"


def test_history_shows_who_when_why_and_the_eval_run(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    registry.push([prompt(), prompt(version="1.1.0")])
    run = passing_run(engine)
    registry.promote("rag-answer", "1.0.0", "production", actor="cli:alice", reason="first")
    registry.promote(
        "rag-answer", "1.1.0", "production", actor="cli:bob", force=True, reason="hotfix"
    )
    registry.rollback("rag-answer", actor="key:sk-keel-Ab3x", reason="regressed")

    moves = registry.history("rag-answer")
    assert [(m.kind, m.from_version, m.to_version, m.actor, m.reason) for m in moves] == [
        ("rollback", "1.1.0", "1.0.0", "key:sk-keel-Ab3x", "regressed"),
        ("promote", "1.0.0", "1.1.0", "cli:bob", "hotfix"),
        ("promote", None, "1.0.0", "cli:alice", "first"),
    ]
    assert [m.eval_run_id for m in moves] == [run, None, run]
    assert [m.forced for m in moves] == [False, True, False]
    assert moves[0].at > moves[1].at > moves[2].at
    assert registry.history("rag-answer", label="staging") == []
    assert moves[0].as_dict()["at"].startswith("2030-01-01T12:")
    with pytest.raises(NotFound):
        registry.history("nope")


def test_diff_shows_what_changed_between_versions(registry: PromptRegistry) -> None:
    registry.push([prompt(), prompt(version="1.1.0", params={"temperature": 0.7})])
    text = registry.diff("rag-answer", "1.0.0", "1.1.0")
    assert "rag-answer@1.0.0" in text and "rag-answer@1.1.0" in text
    assert "0.2" in text and "0.7" in text
    assert registry.diff("rag-answer", "1.0.0", "1.0.0").strip() == ""
    with pytest.raises(NotFound):
        registry.diff("rag-answer", "1.0.0", "5.0.0")


# --- the change feed --------------------------------------------------------------------


def test_moves_since_returns_new_moves_oldest_first(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    registry.push([prompt(), prompt(version="1.1.0"), prompt("classify", "0.1.0")])
    position, labels = registry.snapshot()
    assert (position, labels) == (0, [])

    registry.promote("rag-answer", "1.0.0", "production", force=True, reason="a")
    registry.promote("classify", "0.1.0", "staging", force=True, reason="b")
    registry.promote("rag-answer", "1.1.0", "production", force=True, reason="c")
    registry.rollback("rag-answer")

    moves = registry.moves_since(position)
    assert [(m.name, m.label, m.to_version) for m in moves] == [
        ("rag-answer", "production", "1.0.0"),
        ("classify", "staging", "0.1.0"),
        ("rag-answer", "production", "1.1.0"),
        ("rag-answer", "production", "1.0.0"),
    ]
    assert [m.id for m in moves] == sorted(m.id for m in moves)
    assert registry.moves_since(moves[1].id) == moves[2:]
    assert registry.moves_since(moves[-1].id) == []
    assert registry.moves_since(0, limit=2) == moves[:2]
    last, labels = registry.snapshot()
    assert last == moves[-1].id == registry.last_move_id()
    assert {(x.name, x.label, x.version) for x in labels} == {
        ("classify", "staging", "0.1.0"),
        ("rag-answer", "production", "1.0.0"),
    }


def test_concurrent_promotions_commit_in_feed_order(db_url: str, engine: sa.Engine) -> None:
    """Moves from several writers at once: the feed's ids are gap-free in commit order."""
    names = [f"p{i}" for i in range(6)]
    PromptRegistry(engine).push([prompt(name) for name in names])
    errors: list[BaseException] = []

    def promote(name: str) -> None:
        own = make_engine(db_url)
        try:
            for label in ("staging", "production"):
                PromptRegistry(own).promote(name, "1.0.0", label, force=True, reason="load")
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            own.dispose()

    threads = [threading.Thread(target=promote, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    moves = PromptRegistry(engine).moves_since(0)
    assert [m.id for m in moves] == list(range(moves[0].id, moves[0].id + 12))
    assert count(engine, prompt_labels) == 12
    assert count(engine, audit_log) == 6 + 12  # six pushes, twelve moves


def test_eval_runs_are_validated(engine: sa.Engine) -> None:
    with pytest.raises(InvalidRequest) as caught:
        record_eval_run(
            engine, suite="s", prompt_name="x", prompt_version=None, dataset_hash="h", passed=True
        )
    assert caught.value.param == "prompt_version"
    with pytest.raises(InvalidRequest) as empty:
        record_eval_run(
            engine, suite=" ", prompt_name=None, prompt_version=None, dataset_hash="h", passed=True
        )
    assert empty.value.param == "suite"
    run = record_eval_run(
        engine, suite="s", prompt_name=None, prompt_version=None, dataset_hash="h", passed=False
    )
    assert EvalRunStore(engine).list() == [run]
    assert EvalRunStore(engine).list(passed=True) == []


def test_migration_0004_downgrades_and_upgrades_again(
    registry: PromptRegistry, engine: sa.Engine
) -> None:
    from alembic import command
    from alembic.config import Config

    from keel.store import db, upgrade

    registry.push([prompt()])
    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003_tenant_limits_audit_events")
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert not names & {"prompt_versions", "prompt_labels", "prompt_label_moves", "eval_runs"}

    upgrade(engine)
    assert registry.versions("rag-answer") == []
    assert registry.push([prompt()])[0].status == "new"
