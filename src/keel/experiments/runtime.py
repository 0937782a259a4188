"""The rollout controller: analyses each running experiment, decides, applies, announces.

``keel serve`` runs one :class:`Controller` per process. Every ``interval_s``
(5 s) it looks at the running experiments; one is analysed when its lease
has lapsed. The lease is a row-level one on ``experiments``: a conditional
``UPDATE ... SET lease_owner, lease_until = now + analysis interval WHERE
lease_until <= now`` that exactly one replica wins (PostgreSQL's row lock,
SQLite's write lock). Holding it for one analysis interval (the ramp's
``interval_s``, 30 s by default; 30 s for splits and shadows) both keeps
other replicas out and spaces analyses; a replica that dies mid-interval is
replaced by whichever replica looks next after the lease lapses.

An analysis reads the step window's metrics (``metrics_query``), calls
``decide`` and applies the decision through ``ExperimentStore.apply``,
which drops it if the experiment changed meanwhile (an operator paused or
rolled it back). A rollback is announced through the ``Notifier`` (event
kind ``rollback``, with the reasons and the numbers); gateways pick the new
shares up from the store within seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.experiments.spec import Experiment
from keel.store.experiments import (
    CONTROLLER,
    ExperimentEvent,
    ExperimentRecord,
    ExperimentStore,
)
from keel.tenants.alerts import Event, Notifier

if TYPE_CHECKING:
    from keel.experiments.decide import Decision

__all__ = [
    "ALL_TENANTS",
    "DEFAULT_ANALYSIS_S",
    "Controller",
    "Outcome",
    "analysis_interval",
    "rollback_event",
]

log = logging.getLogger("keel.experiments")

DEFAULT_INTERVAL_S = 5.0  # how often the loop looks for experiments due
DEFAULT_ANALYSIS_S = 30.0  # analysis interval of splits and shadows (ramps set their own)
# A rollback concerns every tenant in the experiment; alert events name one tenant.
ALL_TENANTS = "*"


def analysis_interval(spec: Experiment) -> float:
    """Seconds between two analyses of ``spec``: its ramp's ``interval_s``, else 30."""
    return spec.ramp.interval_s if spec.ramp is not None else DEFAULT_ANALYSIS_S


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One analysis: the decision, the state after it, and the event written (None: none)."""

    experiment: str
    decision: Decision
    record: ExperimentRecord
    event: ExperimentEvent | None


def rollback_event(record: ExperimentRecord, event: ExperimentEvent) -> Event:
    """The alert announcing a rollback, with its reasons and numbers."""
    control = record.spec.control.name
    why = "; ".join(event.reasons) or "no reason given"
    return Event(
        tenant=ALL_TENANTS,
        kind="rollback",
        severity="critical",
        message=f"experiment {record.name} rolled back to {control} by {event.actor}: {why}",
        data={
            "experiment": record.name,
            "actor": event.actor,
            "reasons": list(event.reasons),
            "numbers": dict(event.numbers),
            "shares": dict(record.shares),
            "event_id": event.id,
        },
        at=event.at,
    )


# Longer than the gateways' experiment refresh (1 s), with room for a slow tick.
STEP_SETTLE_S = 3.0


class Controller:
    """Decides for running experiments, one replica per experiment at a time (see module doc)."""

    def __init__(
        self,
        engine: sa.Engine,
        notifier: Notifier | None = None,
        *,
        clock: Clock = utcnow,
        interval_s: float = DEFAULT_INTERVAL_S,
        owner: str | None = None,
    ) -> None:
        self._engine = engine
        self._notifier = notifier
        self._clock = clock
        self._interval_s = interval_s
        self._store = ExperimentStore(engine, clock=clock)
        self.owner = owner or _default_owner()

    async def tick(self, now: datetime | None = None) -> list[Outcome]:
        """Analyse every running experiment whose lease this replica wins; what it decided."""
        moment = now or self._clock()
        records = await asyncio.to_thread(self._store.active)
        outcomes: list[Outcome] = []
        for record in records:
            if record.status != "running":
                continue
            try:
                outcome = await asyncio.to_thread(self._analyse, record, moment)
            except Exception as exc:  # one broken experiment must not stall the others
                log.warning("analysing experiment %s failed: %s", record.name, exc)
                continue
            if outcome is None:
                continue
            outcomes.append(outcome)
            event = outcome.event
            if event is not None and event.action == "rollback" and self._notifier is not None:
                self._notifier.send(rollback_event(outcome.record, event))
            if event is not None and event.action != "hold":
                log.info(
                    "experiment %s: %s (%s)", record.name, event.action, "; ".join(event.reasons)
                )
        return outcomes

    async def run(self) -> None:
        """Tick every ``interval_s`` until cancelled; a failing tick is logged, not raised."""
        while True:
            try:
                await self.tick()
            except Exception as exc:
                log.warning("the rollout controller's tick failed: %s", exc)
            await asyncio.sleep(self._interval_s)

    def _analyse(self, record: ExperimentRecord, now: datetime) -> Outcome | None:
        until = now + timedelta(seconds=analysis_interval(record.spec))
        if not self._store.try_lease(record.name, self.owner, now=now, until=until):
            return None
        # Replicas take up to a refresh to apply a new step's shares; requests served
        # on the old split in between would read as a sample-ratio mismatch.
        since = record.step_started_at + timedelta(seconds=STEP_SETTLE_S)
        # The statistics (numpy) load with the first analysis, not with every gateway.
        from keel.experiments.decide import decide
        from keel.experiments.metrics_query import variant_metrics

        metrics = variant_metrics(self._engine, record.name, since, spec=record.spec)
        decision = decide(record.spec, record.step_index, record.step_started_at, now, metrics)
        applied = self._store.apply(
            record.name, decision, CONTROLLER, expect_version=record.version
        )
        return Outcome(record.name, decision, applied.record, applied.event)
