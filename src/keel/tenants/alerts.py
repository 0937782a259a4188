"""Budget thresholds and cost anomalies, raised once, recorded and sent on.

An alert is an event: stored (the admin API and ``keel events`` list them),
logged, and POSTed as JSON to the configured webhook. Each one is raised at
most once per period across all replicas: the limits backend's
``first_time`` decides which replica sends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from keel.config import AlertsConfig
from keel.limits import BudgetLevel, LimitsBackend
from keel.tenants.admission import NANO_PER_USD

log = logging.getLogger("keel.alerts")


@dataclass(frozen=True, slots=True)
class Event:
    tenant: str
    kind: str  # budget_threshold | cost_anomaly
    severity: str  # info | warning | critical
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


Sink = Callable[[Event], Awaitable[None]]


class Notifier:
    """Sends each event to every sink; a failing sink is logged, never raised."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self._sinks = list(sinks)
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, event: Event) -> None:
        """Fire and forget, off the request path; ``drain`` waits for what is in flight."""
        task = asyncio.ensure_future(self.deliver(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def deliver(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                await sink(event)
            except Exception as exc:
                log.warning("alert sink failed for %s/%s: %s", event.tenant, event.kind, exc)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


async def log_sink(event: Event) -> None:
    level = logging.WARNING if event.severity != "info" else logging.INFO
    log.log(level, "alert %s for tenant %s: %s", event.kind, event.tenant, event.message)


class BudgetAlerts:
    """Raises one event per budget, period and threshold crossed (50 %, 80 %, 100 %)."""

    def __init__(self, config: AlertsConfig, backend: LimitsBackend, notifier: Notifier) -> None:
        self._thresholds = sorted(config.budget_thresholds)
        self._backend = backend
        self._notifier = notifier
        self._raised: set[str] = set()  # this replica already knows these were sent
        self._pending: set[asyncio.Task[None]] = set()

    def observe(self, tenant: str, levels: tuple[BudgetLevel, ...]) -> None:
        """Called after each settlement with the budgets' new levels."""
        for level in levels:
            if level.limit_nano <= 0:
                continue
            share = level.used_nano / level.limit_nano
            for threshold in self._thresholds:
                if share >= threshold and f"{level.key}:{threshold}" not in self._raised:
                    task = asyncio.ensure_future(self._raise(tenant, level, threshold))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)

    async def _raise(self, tenant: str, level: BudgetLevel, threshold: float) -> None:
        marker = f"{level.key}:{threshold}"
        if marker in self._raised:
            return
        self._raised.add(marker)
        # A budget counter lives for its period, and so does the marker.
        expires = datetime.now(UTC) + timedelta(days=32)
        try:
            first = await self._backend.first_time(f"alert:{marker}", expires.timestamp())
        except Exception as exc:
            self._raised.discard(marker)
            log.warning("could not record budget alert %s: %s", marker, exc)
            return
        if not first:
            return
        percent = round(threshold * 100)
        severity = "critical" if threshold >= 1 else "warning" if threshold >= 0.8 else "info"
        self._notifier.send(
            Event(
                tenant=tenant,
                kind="budget_threshold",
                severity=severity,
                message=(
                    f"{level.name} at {level.used_nano / level.limit_nano:.0%} "
                    f"({level.used_nano / NANO_PER_USD:g} of "
                    f"{level.limit_nano / NANO_PER_USD:g} USD): crossed {percent}%"
                ),
                data={
                    "budget": level.name,
                    "period_key": level.key,
                    "threshold": threshold,
                    "used_usd": level.used_nano / NANO_PER_USD,
                    "limit_usd": level.limit_nano / NANO_PER_USD,
                },
            )
        )

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


# --- cost anomalies -------------------------------------------------------------

# A baseline needs this many days of history; a tenant's first days are not anomalies.
MIN_HISTORY_DAYS = 3


@dataclass(frozen=True, slots=True)
class Anomaly:
    tenant: str
    day: date
    spend_usd: float
    baseline_usd: float
    window_days: int
    ratio: float


def find_anomalies(
    daily: Mapping[str, Mapping[date, float]],
    today: date,
    *,
    ratio_7d: float,
    ratio_28d: float,
) -> list[Anomaly]:
    """Tenants whose spend today exceeds ``ratio_7d`` x their 7-day mean or ``ratio_28d`` x 28-day.

    Means are over the days since the tenant's first spend in the window (a
    day without spend counts as zero), so a tenant's history is not diluted
    by days before it existed.
    """
    found = []
    for tenant, days in sorted(daily.items()):
        spend = days.get(today, 0.0)
        if spend <= 0:
            continue
        for window, ratio in ((7, ratio_7d), (28, ratio_28d)):
            start = today - timedelta(days=window)
            past = [d for d in days if start <= d < today]
            if not past:
                continue
            span = (today - min(past)).days
            if span < MIN_HISTORY_DAYS:
                continue
            mean = sum(days[d] for d in past) / span
            if mean > 0 and spend > ratio * mean:
                found.append(Anomaly(tenant, today, spend, mean, window, spend / mean))
                break
    return found


DailySpend = Callable[[date], dict[str, dict[date, float]]]  # since -> tenant -> day -> USD


class AnomalyWatch:
    """Checks every tenant's spend today against its baselines, every ``interval_s``."""

    def __init__(
        self,
        config: AlertsConfig,
        daily_spend: DailySpend,
        backend: LimitsBackend,
        notifier: Notifier,
        *,
        interval_s: float = 60.0,
    ) -> None:
        self._config = config
        self._daily_spend = daily_spend
        self._backend = backend
        self._notifier = notifier
        self._interval_s = interval_s

    async def check(self, today: date | None = None) -> list[Anomaly]:
        today = today or datetime.now(UTC).date()
        daily = await asyncio.to_thread(self._daily_spend, today - timedelta(days=28))
        found = find_anomalies(
            daily,
            today,
            ratio_7d=self._config.anomaly_7d_ratio,
            ratio_28d=self._config.anomaly_28d_ratio,
        )
        expires = datetime.now(UTC) + timedelta(days=2)
        for anomaly in found:
            marker = f"anomaly:{anomaly.tenant}:{anomaly.day}"
            if not await self._backend.first_time(marker, expires.timestamp()):
                continue
            self._notifier.send(
                Event(
                    tenant=anomaly.tenant,
                    kind="cost_anomaly",
                    severity="warning",
                    message=(
                        f"spend today {anomaly.spend_usd:.4f} USD is {anomaly.ratio:.1f}x the "
                        f"{anomaly.window_days}-day mean of {anomaly.baseline_usd:.4f} USD"
                    ),
                    data={
                        "day": anomaly.day.isoformat(),
                        "spend_usd": anomaly.spend_usd,
                        "baseline_usd": anomaly.baseline_usd,
                        "window_days": anomaly.window_days,
                        "ratio": anomaly.ratio,
                    },
                )
            )
        return found

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception as exc:
                log.warning("checking cost anomalies failed: %s", exc)
