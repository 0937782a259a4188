"""Alert delivery: budget thresholds once across replicas, and the webhook POST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from keel.config import AlertsConfig, WebhookConfig
from keel.limits import BudgetLevel, MemoryLimits
from keel.tenants import BudgetAlerts, Event, Notifier
from keel.tenants.webhook import WebhookSink

LIMIT = 1_000_000_000  # 1 USD


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        assert request.headers["authorization"] == "Bearer s3cret"
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


def level(used: int) -> BudgetLevel:
    return BudgetLevel(
        key="budget:acme:day:2026-11-30", name="daily budget", used_nano=used, limit_nano=LIMIT
    )


async def test_each_threshold_is_raised_once_even_by_two_replicas() -> None:
    backend = MemoryLimits()  # shared, as Redis is between replicas
    sent: list[Event] = []

    async def collect(event: Event) -> None:
        sent.append(event)

    notifier = Notifier([collect])
    replicas = [BudgetAlerts(AlertsConfig(), backend, notifier) for _ in range(2)]
    for used in (400_000_000, 600_000_000, 850_000_000, 900_000_000, 1_000_000_000):
        for alerts in replicas:
            alerts.observe("acme", (level(used),))
    for alerts in replicas:
        await alerts.drain()
    await notifier.drain()
    assert sorted(e.data["threshold"] for e in sent) == [0.5, 0.8, 1.0]
    assert {e.severity for e in sent} == {"info", "warning", "critical"}


async def test_the_webhook_gets_the_event_as_json(
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = receiver
    sink = WebhookSink(WebhookConfig(url=url, headers={"Authorization": "Bearer s3cret"}))
    try:
        await sink(Event("acme", "cost_anomaly", "warning", "spend is 3x", {"ratio": 3.0}))
    finally:
        await sink.aclose()
    assert len(received) == 1
    event = received[0]["event"]
    assert (event["tenant"], event["kind"], event["data"]) == (
        "acme",
        "cost_anomaly",
        {"ratio": 3.0},
    )


async def test_a_failing_sink_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    delivered: list[Event] = []

    async def broken(event: Event) -> None:
        raise RuntimeError("webhook answered HTTP 500")

    async def working(event: Event) -> None:
        delivered.append(event)

    notifier = Notifier([broken, working])
    notifier.send(Event("acme", "budget_threshold", "info", "50%"))
    await notifier.drain()
    assert len(delivered) == 1
    assert "webhook answered HTTP 500" in caplog.text
