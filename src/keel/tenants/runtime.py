"""Everything tenancy needs in one gateway process, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from keel.config import KeelConfig
from keel.limits import LimitsBackend
from keel.store import EventStore, RequestStore, TenantStore
from keel.tenants.admission import NANO_PER_USD, Gatekeeper, Prices
from keel.tenants.alerts import AnomalyWatch, BudgetAlerts, Event, Notifier, log_sink
from keel.tenants.directory import TenantDirectory, TenantPolicy
from keel.tenants.propagate import open_backend
from keel.tenants.webhook import WebhookSink

log = logging.getLogger("keel.tenants")


@dataclass(slots=True)
class Tenancy:
    backend: LimitsBackend
    directory: TenantDirectory
    gatekeeper: Gatekeeper
    notifier: Notifier
    alerts: BudgetAlerts
    anomalies: AnomalyWatch
    webhook: WebhookSink | None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Read the tenants before serving, then keep the view and the alerts current."""
        await self.directory.load()
        self._tasks = [
            asyncio.ensure_future(self.directory.run()),
            asyncio.ensure_future(self.anomalies.run()),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.alerts.drain()
        await self.notifier.drain()
        if self.webhook is not None:
            await self.webhook.aclose()
        await self.backend.aclose()


def build_tenancy(
    config: KeelConfig, engine: sa.Engine, requests: RequestStore, prices: Prices
) -> Tenancy:
    backend = open_backend(config)
    directory = TenantDirectory(TenantStore(engine), refresh_s=config.limits.refresh_s)
    events = EventStore(engine)

    async def store_sink(event: Event) -> None:
        await asyncio.to_thread(
            events.add,
            tenant=event.tenant,
            kind=event.kind,
            severity=event.severity,
            message=event.message,
            data=event.data,
            at=event.at,
        )

    alert_config = config.limits.alerts
    webhook = WebhookSink(alert_config.webhook) if alert_config.webhook is not None else None
    notifier = Notifier([log_sink, store_sink, *([webhook] if webhook is not None else [])])
    alerts = BudgetAlerts(alert_config, backend, notifier)

    def spent(tenant: str, first: date, last: date) -> int:
        rows = requests.spend([], since=first, until=last, tenant=tenant)
        return sum(round(row.cost_usd * NANO_PER_USD) for row in rows)

    def daily(since: date) -> dict[str, dict[date, float]]:
        out: dict[str, dict[date, float]] = {}
        for row in requests.spend(["tenant", "day"], since=since):
            tenant, day = row.group["tenant"], row.group["day"]
            if isinstance(tenant, str) and isinstance(day, date):
                out.setdefault(tenant, {})[day] = row.cost_usd
        return out

    async def mirror_suspension(before: TenantPolicy | None, after: TenantPolicy) -> None:
        # The store is the record; the backend's flag lets Redis refuse at once.
        if (before.suspended if before else None) != after.suspended:
            await backend.set_suspended(after.name, after.suspended)

    directory.on_change(mirror_suspension)
    gatekeeper = Gatekeeper(
        config, backend, directory, prices, spent_loader=spent, on_levels=alerts.observe
    )
    return Tenancy(
        backend=backend,
        directory=directory,
        gatekeeper=gatekeeper,
        notifier=notifier,
        alerts=alerts,
        anomalies=AnomalyWatch(alert_config, daily, backend, notifier),
        webhook=webhook,
    )
