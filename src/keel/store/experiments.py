"""Experiments and rollouts: their state, the shares gateways apply, and every decision.

One ``experiments`` row per experiment name holds its file (as JSON), its
status (``running``, ``paused``, ``rolled_back``, ``completed``), a ramp's
step and the shares assignment uses now. Every change — a start, the
controller's advance / rollback / complete, an operator's pause, resume,
advance or rollback — updates that row and adds one ``experiment_events``
row (plus an ``audit_log`` row) in the same transaction. A controller hold
changes nothing and is written only when its reasons differ from the last
event's (numbers aside), to keep the table small.

``version`` is a change feed: each change takes the highest version of any
row plus one, one change at a time (a PostgreSQL advisory lock, SQLite's
write lock), so versions commit in order and a replica that remembers the
highest version it saw misses nothing with :meth:`ExperimentStore.changed_since`.

Completing a ramp of a prompt version also points the prompt's
``production`` label at the candidate (a forced promotion with the reason
``rollout <name> completed``: the rollout's live guard metrics are its gate).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.errors import InvalidRequest, NotFound
from keel.experiments.spec import Experiment
from keel.store._experiment_records import (
    ACTIONS,
    CONTROLLER,
    LIVE,
    Action,
    Applied,
    DecisionLike,
    ExperimentEvent,
    ExperimentRecord,
    Status,
    completed_shares,
    control_shares,
    initial_shares,
    ramp_shares,
)
from keel.store.audit import check_actor, check_reason, record_change
from keel.store.db import capped, translate_errors
from keel.store.keys import DEFAULT_ACTOR
from keel.store.prompts import PRODUCTION, PromptRegistry
from keel.store.tables import experiment_events, experiments, prompt_versions

__all__ = [
    "CONTROLLER",
    "LIVE",
    "Applied",
    "DecisionLike",
    "ExperimentEvent",
    "ExperimentRecord",
    "ExperimentStore",
    "experiment_target",
]

# Serializes experiment changes on PostgreSQL, so versions commit in order.
_CHANGES_LOCK_ID = 0x6B65656C_0006
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def experiment_target(name: str) -> str:
    """How the audit log names an experiment: ``experiment:<name>``."""
    return f"experiment:{name}"


def _record(row: sa.RowMapping) -> ExperimentRecord:
    data = dict(row)
    data["spec"] = Experiment.model_validate(data["spec"])
    data["shares"] = {k: float(v) for k, v in data["shares"].items()}
    return ExperimentRecord(**data)


def _event(row: sa.RowMapping) -> ExperimentEvent:
    return ExperimentEvent(**row)


def _same_reasons(a: Sequence[str], b: Sequence[str]) -> bool:
    """Equal once numbers are blanked: 'n=150 < 200' and 'n=180 < 200' are one reason."""
    return [_NUMBER.sub("#", r) for r in a] == [_NUMBER.sub("#", r) for r in b]


def _state(record: ExperimentRecord) -> dict[str, Any]:
    return {"status": record.status, "step_index": record.step_index, "shares": record.shares}


class ExperimentStore:
    """Experiments in the database; every method is synchronous and short.

    ``aliases``, when given, are the model aliases keel.yaml defines: a start
    naming another alias is refused. Prompt versions are checked against the
    registry in the same database.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Clock = utcnow,
        aliases: Iterable[str] | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._aliases = None if aliases is None else frozenset(aliases)

    # --- reads -------------------------------------------------------------

    def find(self, name: str) -> ExperimentRecord | None:
        query = sa.select(experiments).where(experiments.c.name == name)
        with translate_errors(self._engine, "reading an experiment"), self._engine.connect() as c:
            row = c.execute(query).mappings().one_or_none()
        return None if row is None else _record(row)

    def get(self, name: str) -> ExperimentRecord:
        """Experiment ``name``; ``NotFound`` naming it when there is none."""
        found = self.find(name)
        if found is None:
            raise NotFound(f"no experiment {name}", param="name")
        return found

    def list(self, *, status: Status | None = None) -> builtins.list[ExperimentRecord]:
        """Every experiment (with ``status``, only those), by name."""
        query = sa.select(experiments).order_by(experiments.c.name)
        if status is not None:
            query = query.where(experiments.c.status == status)
        return self._records(query, "listing experiments")

    def active(self) -> builtins.list[ExperimentRecord]:
        """The experiments gateways apply: running and paused ones, by name."""
        query = (
            sa.select(experiments)
            .where(experiments.c.status.in_(LIVE))
            .order_by(experiments.c.name)
        )
        return self._records(query, "reading active experiments")

    def changed_since(self, since: int | datetime) -> builtins.list[ExperimentRecord]:
        """Experiments changed after feed position ``since`` (or after a time), oldest change first.

        Ended experiments are included: a replica learns of a rollback this way.
        """
        query = sa.select(experiments).order_by(experiments.c.version)
        if isinstance(since, datetime):
            query = query.where(experiments.c.updated_at > since)
        else:
            query = query.where(experiments.c.version > since)
        return self._records(query, "reading changed experiments")

    def last_version(self) -> int:
        """The feed position of the latest change, 0 when there is none."""
        query = sa.select(sa.func.max(experiments.c.version))
        with translate_errors(self._engine, "reading experiments"), self._engine.connect() as c:
            return int(c.execute(query).scalar() or 0)

    def events(self, name: str, *, limit: int = 100) -> builtins.list[ExperimentEvent]:
        """The decisions and actions on experiment ``name``, newest first."""
        query = (
            sa.select(experiment_events)
            .where(experiment_events.c.experiment == name)
            .order_by(experiment_events.c.id.desc())
            .limit(capped(limit))
        )
        with (
            translate_errors(self._engine, "reading experiment events"),
            self._engine.connect() as c,
        ):
            return [_event(row) for row in c.execute(query).mappings()]

    # --- changes -----------------------------------------------------------

    def start(self, spec: Experiment, actor: str = DEFAULT_ACTOR) -> ExperimentRecord:
        """Store ``spec`` as running with its initial shares.

        Refused when an experiment of that name is running or paused (a
        finished one is replaced; its events stay), when a variant's prompt
        version is not pushed, or when it names an alias keel.yaml lacks.
        """
        check_actor(actor)
        self._check_aliases(spec)
        with translate_errors(self._engine, "starting an experiment"), self._engine.begin() as conn:
            self._check_prompt_versions(conn, spec)
            version = self._lock_and_next_version(conn)
            before = self._read(conn, spec.name)
            if before is not None and before.live:
                raise InvalidRequest(
                    f"experiment {spec.name} is already {before.status}; roll it back"
                    " (keel rollout rollback) before starting it again",
                    param="name",
                    code="experiment_running",
                )
            now = self._clock()
            shares = initial_shares(spec)
            values: dict[str, Any] = {
                "spec": spec.model_dump(mode="json"),
                "status": "running",
                "step_index": 0,
                "step_started_at": now,
                "shares": shares,
                "version": version,
                "updated_at": now,
                "created_at": now,
                "created_by": actor,
                "lease_owner": None,
                "lease_until": None,
            }
            if before is None:
                conn.execute(sa.insert(experiments).values(name=spec.name, **values))
            else:
                conn.execute(
                    sa.update(experiments).where(experiments.c.name == spec.name).values(**values)
                )
            record = self._read_required(conn, spec.name)
            self._add_event(conn, record, actor, "start", [], {}, now)
            record_change(
                conn,
                at=now,
                actor=actor,
                action="experiment.start",
                target=experiment_target(spec.name),
                before=None if before is None else _state(before),
                after=_state(record),
            )
        return record

    def apply(
        self,
        name: str,
        decision: DecisionLike,
        actor: str = CONTROLLER,
        *,
        expect_version: int | None = None,
    ) -> Applied:
        """Carry out the controller's decision on a running experiment.

        ``advance`` moves a ramp to its next step (completing it past the
        last), ``rollback`` gives the control 100 % and ends it
        ``rolled_back``, ``complete`` ends it ``completed`` (a ramp's
        candidate at 100 %, its prompt version promoted), ``hold`` changes
        nothing. Nothing happens (``event`` None) when the experiment is no
        longer running, when it changed since ``expect_version`` (the
        decision is stale), or for a hold whose reasons were already written.
        """
        if decision.action not in ACTIONS:
            raise InvalidRequest(f"action: unknown decision {decision.action!r}", param="action")
        action: Action = decision.action
        reasons = [str(r) for r in decision.reasons]
        numbers = dict(decision.numbers)
        current = self.get(name)
        if current.status != "running" or (
            expect_version is not None and current.version != expect_version
        ):
            return Applied(current, None)
        if action == "hold":
            return self._hold(current, actor, reasons, numbers)
        if action == "advance" and current.step_index + 1 >= len(current.steps):
            action = "complete"
        if action == "complete":
            numbers["promotion"] = self._promote(current, actor)
        return self._change(
            name,
            actor,
            action,
            reasons,
            numbers,
            allowed=("running",),
            expect_version=current.version,
        )

    def pause(self, name: str, actor: str = DEFAULT_ACTOR, *, reason: str | None = None) -> Applied:
        """Stop the controller moving it; gateways keep applying its current shares."""
        return self._manual(name, actor, "pause", reason, allowed=("running",))

    def resume(
        self, name: str, actor: str = DEFAULT_ACTOR, *, reason: str | None = None
    ) -> Applied:
        """Let the controller analyse and move a paused experiment again."""
        return self._manual(name, actor, "resume", reason, allowed=("paused",))

    def advance(
        self, name: str, actor: str = DEFAULT_ACTOR, *, reason: str | None = None
    ) -> Applied:
        """Move a ramp to its next step now, whatever its metrics; past the last, complete it."""
        current = self.get(name)
        if current.spec.ramp is None:
            raise InvalidRequest(
                f"experiment {name} is a {current.mode}, not a ramp; only ramps advance",
                param="name",
            )
        if current.status not in LIVE:
            raise self._ended(current, "advance")
        last = current.step_index + 1 >= len(current.steps)
        numbers: dict[str, Any] = {}
        if last:
            numbers["promotion"] = self._promote(current, actor)
        return self._change(
            name,
            actor,
            "complete" if last else "advance",
            [why] if (why := check_reason(reason)) else [],
            numbers,
            allowed=LIVE,
            expect_version=current.version,
        )

    def rollback(self, name: str, actor: str = DEFAULT_ACTOR, *, reason: str) -> Applied:
        """Give the control 100 % and end the experiment ``rolled_back``; ``reason`` is required."""
        why = check_reason(reason)
        if why is None:
            raise InvalidRequest("reason: a rollback must say why (--reason)", param="reason")
        return self._manual(name, actor, "rollback", why, allowed=LIVE)

    def try_lease(self, name: str, owner: str, *, now: datetime, until: datetime) -> bool:
        """Take experiment ``name`` for analysis until ``until`` unless another holds it.

        One conditional UPDATE: it succeeds only while the experiment runs and
        its lease has lapsed, so of several controller replicas exactly one
        wins; the lease lasting one analysis interval also spaces analyses.
        """
        query = (
            sa.update(experiments)
            .where(
                experiments.c.name == name,
                experiments.c.status == "running",
                sa.or_(experiments.c.lease_until.is_(None), experiments.c.lease_until <= now),
            )
            .values(lease_owner=owner[:128], lease_until=until)
        )
        with translate_errors(self._engine, "leasing an experiment"), self._engine.begin() as c:
            return c.execute(query).rowcount == 1

    # --- helpers -----------------------------------------------------------

    def _manual(
        self,
        name: str,
        actor: str,
        action: Action,
        reason: str | None,
        *,
        allowed: Sequence[Status],
    ) -> Applied:
        why = check_reason(reason)
        return self._change(name, actor, action, [why] if why else [], {}, allowed=allowed)

    def _hold(
        self,
        current: ExperimentRecord,
        actor: str,
        reasons: builtins.list[str],
        numbers: dict[str, Any],
    ) -> Applied:
        with translate_errors(self._engine, "recording a hold"), self._engine.begin() as conn:
            last = conn.execute(
                sa.select(experiment_events.c.action, experiment_events.c.reasons)
                .where(experiment_events.c.experiment == current.name)
                .order_by(experiment_events.c.id.desc())
                .limit(1)
            ).one_or_none()
            if last is not None and last.action == "hold" and _same_reasons(last.reasons, reasons):
                return Applied(current, None)
            event = self._add_event(conn, current, actor, "hold", reasons, numbers, self._clock())
        return Applied(current, event)

    def _change(
        self,
        name: str,
        actor: str,
        action: Action,
        reasons: builtins.list[str],
        numbers: dict[str, Any],
        *,
        allowed: Sequence[Status],
        expect_version: int | None = None,
    ) -> Applied:
        check_actor(actor)
        doing = f"{action} of an experiment"
        with translate_errors(self._engine, doing), self._engine.begin() as c:
            version = self._lock_and_next_version(c)
            before = self._read_required(c, name)
            if expect_version is not None and before.version != expect_version:
                if action == "complete" and "promotion" in numbers:
                    raise InvalidRequest(
                        f"experiment {name} changed while completing it; its prompt label was"
                        " already promoted, check `keel prompts history`",
                        param="name",
                    )
                return Applied(before, None)
            if before.status not in allowed:
                raise self._ended(before, action)
            now = self._clock()
            values = self._transition(before, action, now)
            c.execute(
                sa.update(experiments)
                .where(experiments.c.name == name)
                .values(version=version, updated_at=now, **values)
            )
            after = self._read_required(c, name)
            numbers.setdefault("from", _state(before))
            event = self._add_event(c, after, actor, action, reasons, numbers, now)
            record_change(
                c,
                at=now,
                actor=actor,
                action=f"experiment.{action}",
                target=experiment_target(name),
                before=_state(before),
                after=_state(after),
                reason="; ".join(reasons)[:1000] or None,
            )
        return Applied(after, event)

    @staticmethod
    def _transition(before: ExperimentRecord, action: Action, now: datetime) -> dict[str, Any]:
        spec = before.spec
        if action == "pause":
            return {"status": "paused"}
        if action == "resume":
            return {"status": "running", "lease_until": None}
        if action == "rollback":
            return {"status": "rolled_back", "shares": control_shares(spec)}
        if action == "complete":
            return {
                "status": "completed",
                "shares": completed_shares(spec, before.shares),
                "step_index": max(0, len(before.steps) - 1) if spec.ramp else 0,
            }
        assert action == "advance"
        step = before.step_index + 1
        return {"step_index": step, "step_started_at": now, "shares": ramp_shares(spec, step)}

    def _promote(self, current: ExperimentRecord, actor: str) -> dict[str, Any] | None:
        """A completed prompt-version ramp points ``production`` at its candidate."""
        spec = current.spec
        candidate = spec.candidates[0]
        if spec.ramp is None or spec.prompt is None or candidate.prompt_version is None:
            return None
        # The rollout's live guard metrics are its gate; the move is forced with
        # that reason and keeps a passing eval run's id when the version has one.
        move = PromptRegistry(self._engine, clock=self._clock).promote(
            spec.prompt,
            candidate.prompt_version,
            PRODUCTION,
            actor,
            force=True,
            reason=f"rollout {spec.name} completed",
        )
        found: dict[str, Any] = {
            "prompt": spec.prompt,
            "version": candidate.prompt_version,
            "label": PRODUCTION,
        }
        if move is None:
            return {**found, "changed": False}
        return {
            **found,
            "changed": True,
            "move_id": move.id,
            "from_version": move.from_version,
            "forced": move.forced,
            "eval_run_id": move.eval_run_id,
        }

    def _add_event(
        self,
        conn: sa.Connection,
        record: ExperimentRecord,
        actor: str,
        action: Action,
        reasons: builtins.list[str],
        numbers: Mapping[str, Any],
        at: datetime,
    ) -> ExperimentEvent:
        values: dict[str, Any] = {
            "experiment": record.name,
            "at": at,
            "actor": check_actor(actor),
            "action": action,
            "reasons": reasons,
            "numbers": dict(numbers),
            "step_index": record.step_index,
            "shares": dict(record.shares),
        }
        event_id = conn.execute(
            sa.insert(experiment_events).values(**values).returning(experiment_events.c.id)
        ).scalar_one()
        row = conn.execute(
            sa.select(experiment_events).where(experiment_events.c.id == event_id)
        ).mappings()
        return _event(row.one())

    @staticmethod
    def _lock_and_next_version(conn: sa.Connection) -> int:
        # One change at a time, so versions commit in increasing order.
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CHANGES_LOCK_ID)))
        else:
            # A write that changes nothing still takes SQLite's write lock (the
            # driver opens the transaction only at a write), so reads see the latest.
            conn.execute(sa.update(experiments).where(sa.false()).values(version=0))
        return int(conn.execute(sa.select(sa.func.max(experiments.c.version))).scalar() or 0) + 1

    @staticmethod
    def _read(conn: sa.Connection, name: str) -> ExperimentRecord | None:
        row = (
            conn.execute(sa.select(experiments).where(experiments.c.name == name))
            .mappings()
            .one_or_none()
        )
        return None if row is None else _record(row)

    def _read_required(self, conn: sa.Connection, name: str) -> ExperimentRecord:
        found = self._read(conn, name)
        if found is None:
            raise NotFound(f"no experiment {name}", param="name")
        return found

    @staticmethod
    def _ended(record: ExperimentRecord, action: str) -> InvalidRequest:
        return InvalidRequest(
            f"cannot {action} experiment {record.name}: it is {record.status.replace('_', ' ')}",
            param="name",
            code="experiment_state",
        )

    def _check_aliases(self, spec: Experiment) -> None:
        if self._aliases is None:
            return
        named = [("alias", spec.alias)]
        named += [(f"variants.{v.name}.alias", v.alias) for v in spec.variants]
        named += [(f"guards.{i}.judge_alias", g.judge_alias) for i, g in enumerate(spec.guards)]
        if spec.shadow is not None:
            named.append(("shadow.judge_alias", spec.shadow.judge_alias))
        for where, alias in named:
            if alias is not None and alias not in self._aliases:
                known = ", ".join(sorted(self._aliases)) or "none"
                raise InvalidRequest(
                    f"{where}: unknown model alias {alias!r}; keel.yaml defines {known}",
                    param=where,
                )

    @staticmethod
    def _check_prompt_versions(conn: sa.Connection, spec: Experiment) -> None:
        if spec.prompt is None:
            for v in spec.variants:
                if v.prompt_version is not None:
                    raise InvalidRequest(
                        f"variants.{v.name}.prompt_version: the experiment names no prompt;"
                        " set prompt: to the registry prompt whose requests take part",
                        param=f"variants.{v.name}.prompt_version",
                    )
            return
        pushed = set(
            conn.execute(
                sa.select(prompt_versions.c.version).where(prompt_versions.c.name == spec.prompt)
            ).scalars()
        )
        for v in spec.variants:
            if v.prompt_version is not None and v.prompt_version not in pushed:
                where = f"variants.{v.name}.prompt_version"
                have = ", ".join(sorted(pushed)) or "none"
                raise InvalidRequest(
                    f"{where}: prompt {spec.prompt} has no pushed version {v.prompt_version}"
                    f" (pushed: {have}); run keel prompts push first",
                    param=where,
                )

    def _records(self, query: sa.Select[Any], doing: str) -> builtins.list[ExperimentRecord]:
        with translate_errors(self._engine, doing), self._engine.connect() as c:
            return [_record(row) for row in c.execute(query).mappings()]
