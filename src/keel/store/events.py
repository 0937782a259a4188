"""Events: what the alert logic noticed (a budget threshold crossed, a cost anomaly...).

The store only keeps and lists them; deciding when one happens belongs to the
alerting code, which adds them off the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.errors import InvalidRequest
from keel.store.db import capped, translate_errors
from keel.store.tables import ID_LEN, REASON_LEN, SHORT_LEN, events

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class Event:
    """An event to add in a batch; ``at`` defaults to the store's clock."""

    kind: str  # budget_threshold, cost_anomaly, ...
    message: str
    tenant: str | None = None
    severity: str = "info"  # info | warning | critical
    data: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    at: datetime
    tenant: str | None
    kind: str
    severity: str
    message: str
    data: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the CLI and the admin API."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "tenant": self.tenant,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
            "data": dict(self.data),
        }


class EventStore:
    """Adds and lists events; every method is synchronous and short."""

    def __init__(self, engine: sa.Engine, *, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def add(
        self,
        *,
        kind: str,
        message: str,
        tenant: str | None = None,
        severity: str = "info",
        data: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> EventRecord:
        """Store one event and return it as stored.

        ``severity`` is ``info``, ``warning`` or ``critical``; a message
        longer than 1,000 characters is cut rather than refused.
        """
        row = self._row(Event(kind, message, tenant, severity, data or {}, at))
        with translate_errors(self._engine, "adding an event"), self._engine.begin() as conn:
            event_id = conn.execute(sa.insert(events).values(row).returning(events.c.id))
            stored = conn.execute(
                sa.select(events).where(events.c.id == event_id.scalar_one())
            ).mappings()
            return EventRecord(**stored.one())

    def add_many(self, batch: Iterable[Event]) -> int:
        """Store several events in one transaction; returns how many."""
        rows = [self._row(event) for event in batch]
        if rows:
            with translate_errors(self._engine, "adding events"), self._engine.begin() as conn:
                conn.execute(sa.insert(events), rows)
        return len(rows)

    def list(
        self,
        *,
        tenant: str | None = None,
        since: datetime | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """Newest first, at most ``limit`` (1 to 1000), filtered by any of the arguments."""
        query = sa.select(events).order_by(events.c.at.desc(), events.c.id.desc())
        if tenant is not None:
            query = query.where(events.c.tenant == tenant)
        if since is not None:
            query = query.where(events.c.at >= since)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        query = query.limit(capped(limit))
        with translate_errors(self._engine, "listing events"), self._engine.connect() as conn:
            return [EventRecord(**row) for row in conn.execute(query).mappings()]

    def _row(self, event: Event) -> dict[str, Any]:
        if event.severity not in SEVERITIES:
            raise InvalidRequest(
                f"severity: {event.severity!r} is not one of {', '.join(SEVERITIES)}",
                param="severity",
            )
        if not event.kind or len(event.kind) > SHORT_LEN:
            raise InvalidRequest(f"kind: expected 1 to {SHORT_LEN} characters", param="kind")
        if event.tenant is not None and len(event.tenant) > ID_LEN:
            raise InvalidRequest(f"tenant: at most {ID_LEN} characters", param="tenant")
        message = event.message
        if len(message) > REASON_LEN:  # a long message must not lose the event
            message = message[: REASON_LEN - 3] + "..."
        return {
            "at": event.at or self._clock(),
            "tenant": event.tenant,
            "kind": event.kind,
            "severity": event.severity,
            "message": message,
            "data": dict(event.data),
        }
