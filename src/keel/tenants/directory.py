"""What every replica knows about tenants: tier, overrides and suspension.

The store is the truth. Each gateway keeps a snapshot in memory, so the
request path never queries for it, and re-reads only the tenants changed
since its last look every ``limits.refresh_s`` (0.5 s by default): that bounds
how long a suspension or an override takes to reach every replica, whatever
the limits backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger("keel.tenants")

# Re-read a little before the newest change seen: a write stamped by a clock
# slightly behind ours, or committed just after our read, is still picked up.
_OVERLAP = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    name: str
    tier: str | None
    limits: Mapping[str, Any] | None
    suspended: str | None  # the reason, when suspended


class TenantSource(Protocol):
    """What the directory reads; :class:`keel.store.TenantStore` is one."""

    def snapshot(self) -> list[Any]: ...

    def changed_since(self, since: datetime) -> list[Any]: ...


# Called with the tenant's previous policy (None when new) and its new one.
Listener = Callable[[TenantPolicy | None, TenantPolicy], Awaitable[None]]


def _policy(record: Any) -> TenantPolicy:
    suspended = None
    if record.suspended_at is not None:
        suspended = record.suspend_reason or "suspended"
    return TenantPolicy(record.name, record.tier, record.limits, suspended)


class TenantDirectory:
    def __init__(self, source: TenantSource | None, *, refresh_s: float) -> None:
        self._source = source
        self._refresh_s = refresh_s
        self._tenants: dict[str, TenantPolicy] = {}
        self._seen: datetime | None = None
        self._listeners: list[Listener] = []
        # Bumped on every change, so caches built on top know when to forget.
        self.version = 0

    def get(self, name: str) -> TenantPolicy | None:
        return self._tenants.get(name)

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def load(self) -> None:
        """The first full read, before serving."""
        if self._source is not None:
            await self._apply(await asyncio.to_thread(self._source.snapshot))

    async def refresh(self) -> None:
        """Read what changed since the last look (all of it the first time)."""
        if self._source is None:
            return
        if self._seen is None:
            await self.load()
            return
        changed = await asyncio.to_thread(self._source.changed_since, self._seen - _OVERLAP)
        await self._apply(changed)

    async def run(self) -> None:
        """Refresh forever; a failed read is logged and retried on the next tick."""
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # the store may be briefly away; keep the last view
                log.warning("reading tenants failed: %s", exc)

    async def _apply(self, records: Iterable[Any]) -> None:
        changed = []
        for record in records:
            policy = _policy(record)
            if self._seen is None or record.updated_at > self._seen:
                self._seen = record.updated_at
            before = self._tenants.get(policy.name)
            if before != policy:
                self._tenants[policy.name] = policy
                changed.append((before, policy))
        if not changed:
            return
        self.version += 1
        for before, policy in changed:
            for listener in self._listeners:
                try:
                    await listener(before, policy)
                except Exception as exc:
                    log.warning("applying a change to tenant %s failed: %s", policy.name, exc)
