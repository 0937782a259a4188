"""The audit log: who changed which tenant or key, when, from what to what, and why.

Repositories write a row with :func:`record_change` inside the transaction
of the change itself, so a change and its audit row commit or fail together.
:class:`AuditStore` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.errors import InvalidRequest
from keel.store.db import capped, translate_errors
from keel.store.tables import ACTOR_LEN, REASON_LEN, TARGET_LEN, audit_log


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One change: ``before`` is None for a creation, ``after`` for a deletion."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the CLI and the admin API."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


def check_actor(actor: str) -> str:
    """``actor`` if it fits the column; every change must say who made it."""
    if not actor.strip() or len(actor) > ACTOR_LEN:
        raise InvalidRequest(f"actor: expected 1 to {ACTOR_LEN} characters", param="actor")
    return actor


def check_reason(reason: str | None) -> str | None:
    """``reason`` with surrounding blanks removed, None when empty; refused when too long."""
    if reason is None or not reason.strip():
        return None
    if len(reason) > REASON_LEN:
        raise InvalidRequest(f"reason: at most {REASON_LEN} characters", param="reason")
    return reason.strip()


def record_change(
    conn: sa.Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    reason: str | None = None,
) -> None:
    """Add one audit row on ``conn``, inside the caller's transaction."""
    conn.execute(
        sa.insert(audit_log).values(
            at=at,
            actor=check_actor(actor),
            action=action,
            target=target[:TARGET_LEN],
            before=None if before is None else dict(before),
            after=None if after is None else dict(after),
            reason=check_reason(reason),
        )
    )


class AuditStore:
    """Reads the audit log; rows are only ever written by the repositories' changes."""

    def __init__(self, engine: sa.Engine, *, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def list(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Newest first, at most ``limit`` (1 to 1000) rows, filtered by any of the arguments.

        ``target`` is matched exactly: ``tenant:acme``, ``key:sk-keel-Ab3x``.
        """
        query = sa.select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        if target is not None:
            query = query.where(audit_log.c.target == target)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if actor is not None:
            query = query.where(audit_log.c.actor == actor)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        query = query.limit(capped(limit))
        with translate_errors(self._engine, "reading the audit log"), self._engine.connect() as c:
            return [AuditRecord(**row) for row in c.execute(query).mappings()]
