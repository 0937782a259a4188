"""Tenants: their tier, limit overrides and suspension (the kill switch), audited.

Every change writes one audit row in its own transaction and moves the
tenant's ``updated_at``, which is how gateway replicas notice it: they poll
:meth:`TenantStore.changed_since` and re-read only what changed.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.config import Tier, tier_with
from keel.errors import InvalidRequest, NotFound
from keel.store.audit import check_actor, check_reason, record_change
from keel.store.db import translate_errors
from keel.store.keys import (
    DEFAULT_ACTOR,
    check_limits,
    check_name,
    check_tier_name,
    tenant_state,
    tenant_target,
)
from keel.store.tables import tenants

_TICK = timedelta(microseconds=1)


class Unset(enum.Enum):
    """The type of :data:`UNSET`: "leave this field as it is"."""

    UNSET = enum.auto()


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant as stored. ``limits`` is its override of its tier's fields, if any."""

    id: int
    name: str
    tier: str | None
    limits: Mapping[str, Any] | None
    suspended_at: datetime | None
    suspend_reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def suspended(self) -> bool:
        return self.suspended_at is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the CLI and the admin API."""

        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "name": self.name,
            "tier": self.tier,
            "limits": None if self.limits is None else dict(self.limits),
            "suspended": self.suspended,
            "suspended_at": iso(self.suspended_at),
            "suspend_reason": self.suspend_reason,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }

    def audited(self) -> dict[str, Any]:
        return tenant_state(self.tier, self.limits, self.suspended_at, self.suspend_reason)


def _record(row: sa.RowMapping) -> TenantRecord:
    return TenantRecord(**row)


def effective_tier(
    record: TenantRecord, tiers: Mapping[str, Tier], default_tier: str | None = None
) -> tuple[str | None, Tier, str | None]:
    """The tier name that applies to a tenant, that tier with its overrides, and any problem.

    For display (CLI, admin API): a tier keel.yaml no longer defines, or
    overrides the tier refuses once merged, are reported, not raised.
    """
    name = record.tier or default_tier
    base = tiers.get(name) if name is not None else None
    problem = None
    if name is not None and base is None:
        problem = f'tier "{name}" is not in keel.yaml; only the overrides apply'
    try:
        return name, tier_with(base or Tier(), record.limits or {}), problem
    except ValueError as error:  # pydantic's ValidationError is one
        return name, base or Tier(), f"the overrides do not apply to this tier: {error}"


def limit_path(path: str) -> tuple[str, ...]:
    """``tenant.rpm`` as ``("tenant", "rpm")``; refused when a part is empty."""
    parts = tuple(path.strip().split("."))
    if not all(parts):
        raise InvalidRequest(
            f"limits: {path!r} is not a field path; expected e.g. tenant.rpm", param="limits"
        )
    return parts


def apply_limit_changes(
    override: Mapping[str, Any] | None,
    set_limits: Mapping[str, Any] | None = None,
    clear_limits: Iterable[str] = (),
) -> dict[str, Any] | None:
    """``override`` with dotted paths set (``{"tenant.rpm": 100}``) and removed.

    A value of None sets the field to "unlimited"; clearing a field removes
    the override, so the tier's own value applies again. Not validated here.
    """
    result: dict[str, Any] = _deep_copy(override or {})
    for path, value in (set_limits or {}).items():
        *parents, leaf = limit_path(path)
        node = result
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    for path in clear_limits:
        _remove(result, limit_path(path))
    return result or None


def _deep_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in value.items()}


def _remove(node: dict[str, Any], path: tuple[str, ...]) -> None:
    head, *rest = path
    if not rest:
        node.pop(head, None)
        return
    child = node.get(head)
    if isinstance(child, dict):
        _remove(child, tuple(rest))
        if not child:
            del node[head]  # an emptied section overrides nothing


class TenantStore:
    """Tenants in the database; every method is synchronous and short.

    ``tiers`` and ``aliases``, when given (the names keel.yaml defines), are
    the only tier and model names a tenant may refer to.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Clock = utcnow,
        tiers: Collection[str] | None = None,
        aliases: Collection[str] | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._tiers = tiers
        self._aliases = aliases

    # --- reads -------------------------------------------------------------

    def get(self, name: str) -> TenantRecord | None:
        """The tenant called ``name``, or None."""
        query = sa.select(tenants).where(tenants.c.name == name)
        with translate_errors(self._engine, "reading a tenant"), self._engine.connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
        return None if row is None else _record(row)

    def require(self, name: str) -> TenantRecord:
        """Like :meth:`get`, raising ``NotFound`` when there is no such tenant."""
        record = self.get(name)
        if record is None:
            raise NotFound(f'no tenant "{name}"', param="tenant")
        return record

    def list(self) -> list[TenantRecord]:
        """Every tenant, by name."""
        return self._select(sa.select(tenants).order_by(tenants.c.name), "listing tenants")

    def snapshot(self) -> builtins.list[TenantRecord]:
        """Every tenant: what a gateway loads at start.

        Then poll :meth:`changed_since` from the newest ``updated_at`` seen.
        """
        return self._select(sa.select(tenants).order_by(tenants.c.id), "reading tenants")

    def changed_since(self, since: datetime) -> builtins.list[TenantRecord]:
        """Tenants whose ``updated_at`` is at or after ``since``, oldest change first.

        Inclusive, so a change stamped at exactly ``since`` is never missed;
        re-reading one is harmless. Two transactions on different tenants can
        commit in the opposite order of their stamps, so pollers should ask
        from a little before the newest stamp they have seen (a few seconds).
        """
        query = sa.select(tenants).where(tenants.c.updated_at >= since)
        query = query.order_by(tenants.c.updated_at, tenants.c.id)
        return self._select(query, "reading changed tenants")

    def _select(self, query: sa.Select[Any], doing: str) -> builtins.list[TenantRecord]:
        with translate_errors(self._engine, doing), self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    # --- changes -----------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        tier: str | None = None,
        limits: Mapping[str, Any] | None = None,
        actor: str = DEFAULT_ACTOR,
        reason: str | None = None,
    ) -> TenantRecord:
        """Create tenant ``name``; ``InvalidRequest`` if it exists already."""
        check_name(name, "name", 128)
        check_tier_name(tier, self._tiers)
        override = check_limits(limits, aliases=self._aliases)
        check_actor(actor)
        reason = check_reason(reason)
        insert: Any
        with translate_errors(self._engine, "creating a tenant"), self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            now = self._stamp(conn)
            # RETURNING, not rowcount: psycopg does not report 0 for a skipped insert.
            created = conn.execute(
                insert(tenants)
                .values(name=name, tier=tier, limits=override, created_at=now, updated_at=now)
                .on_conflict_do_nothing()
                .returning(tenants.c.id)
            ).scalar_one_or_none()
            if created is None:
                raise InvalidRequest(f'tenant "{name}" already exists', param="name")
            record = self._read(conn, name)
            self._audit(conn, "tenant.create", None, record, actor, reason)
        return record

    def set(
        self,
        name: str,
        *,
        tier: str | Unset | None = UNSET,
        limits: Mapping[str, Any] | Unset | None = UNSET,
        set_limits: Mapping[str, Any] | None = None,
        clear_limits: Iterable[str] = (),
        actor: str = DEFAULT_ACTOR,
        reason: str | None = None,
    ) -> TenantRecord:
        """Change a tenant's tier and/or limit override, in one audited transaction.

        ``tier=None`` clears the tier. ``limits`` replaces the whole override
        (None removes it); ``set_limits`` and ``clear_limits`` then change
        single fields by dotted path (see :func:`apply_limit_changes`), on top
        of what is stored at that moment. The result is validated as a whole,
        and problems raise ``InvalidRequest`` naming the field, e.g.
        ``limits.tenant.rpm: Input should be greater than 0``. A call that
        changes nothing writes nothing.
        """
        if not isinstance(tier, Unset):
            check_tier_name(tier, self._tiers)
        if not isinstance(limits, Unset):
            check_limits(limits, aliases=self._aliases)
        clear = list(clear_limits)
        check_actor(actor)
        reason = check_reason(reason)
        with translate_errors(self._engine, "changing a tenant"), self._engine.begin() as conn:
            before = self._lock(conn, name)
            base = before.limits if isinstance(limits, Unset) else limits
            override = check_limits(
                apply_limit_changes(base, set_limits, clear), aliases=self._aliases
            )
            values: dict[str, Any] = {"limits": override}
            if not isinstance(tier, Unset):
                values["tier"] = tier
            return self._change(conn, before, values, "tenant.set", actor, reason)

    def suspend(self, name: str, *, reason: str, actor: str = DEFAULT_ACTOR) -> TenantRecord:
        """Turn the tenant's kill switch on: its requests are refused until resumed.

        Suspending a suspended tenant only replaces the reason.
        """
        why = check_reason(reason)
        if why is None:
            raise InvalidRequest("reason: say why the tenant is suspended", param="reason")
        check_actor(actor)
        with translate_errors(self._engine, "suspending a tenant"), self._engine.begin() as conn:
            before = self._lock(conn, name)
            values = {"suspended_at": before.suspended_at or self._clock(), "suspend_reason": why}
            return self._change(conn, before, values, "tenant.suspend", actor, why)

    def resume(
        self, name: str, *, actor: str = DEFAULT_ACTOR, reason: str | None = None
    ) -> TenantRecord:
        """Turn the tenant's kill switch off; resuming an active tenant changes nothing."""
        check_actor(actor)
        reason = check_reason(reason)
        with translate_errors(self._engine, "resuming a tenant"), self._engine.begin() as conn:
            before = self._lock(conn, name)
            values = {"suspended_at": None, "suspend_reason": None}
            return self._change(conn, before, values, "tenant.resume", actor, reason)

    # --- helpers -----------------------------------------------------------

    def _lock(self, conn: sa.Connection, name: str) -> TenantRecord:
        # A write first: it takes SQLite's write lock (the driver only opens a
        # transaction at the first write) and PostgreSQL's row lock, so the
        # read below sees the latest row and nobody changes it until commit.
        touched = conn.execute(
            sa.update(tenants).where(tenants.c.name == name).values(updated_at=tenants.c.updated_at)
        ).rowcount
        if not touched:
            raise NotFound(f'no tenant "{name}"', param="tenant")
        return self._read(conn, name)

    @staticmethod
    def _read(conn: sa.Connection, name: str) -> TenantRecord:
        row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).mappings().one()
        return _record(row)

    def _stamp(self, conn: sa.Connection) -> datetime:
        # Never older than the newest stamp already stored: a writer whose clock
        # runs behind must not stamp a change where pollers have already looked.
        newest = conn.execute(sa.select(sa.func.max(tenants.c.updated_at))).scalar()
        now = self._clock()
        return now if newest is None or now > newest else newest + _TICK

    def _change(
        self,
        conn: sa.Connection,
        before: TenantRecord,
        values: dict[str, Any],
        action: str,
        actor: str,
        reason: str | None,
    ) -> TenantRecord:
        current = {column: getattr(before, column) for column in values}
        if current == values:
            return before  # nothing changes: no new stamp, no audit row
        values["updated_at"] = self._stamp(conn)
        conn.execute(sa.update(tenants).where(tenants.c.id == before.id).values(**values))
        after = self._read(conn, before.name)
        self._audit(conn, action, before, after, actor, reason)
        return after

    def _audit(
        self,
        conn: sa.Connection,
        action: str,
        before: TenantRecord | None,
        after: TenantRecord,
        actor: str,
        reason: str | None,
    ) -> None:
        record_change(
            conn,
            at=self._clock(),
            actor=actor,
            action=action,
            target=tenant_target(after.name),
            before=None if before is None else before.audited(),
            after=after.audited(),
            reason=reason,
        )
