"""Cost anomalies: today's spend against the tenant's own 7- and 28-day baselines."""

from __future__ import annotations

from datetime import date, timedelta

from keel.tenants import find_anomalies

TODAY = date(2026, 11, 30)


def history(days: int, per_day: float, today: float) -> dict[date, float]:
    spend = {TODAY - timedelta(days=i): per_day for i in range(1, days + 1)}
    spend[TODAY] = today
    return spend


def test_spend_over_twice_the_7_day_mean_is_an_anomaly() -> None:
    found = find_anomalies({"acme": history(10, 1.0, 2.5)}, TODAY, ratio_7d=2, ratio_28d=3)
    assert [(a.tenant, a.window_days, round(a.ratio, 2)) for a in found] == [("acme", 7, 2.5)]


def test_spend_at_or_under_the_ratio_is_not() -> None:
    assert find_anomalies({"acme": history(10, 1.0, 2.0)}, TODAY, ratio_7d=2, ratio_28d=3) == []


def test_the_28_day_baseline_catches_a_slow_climb() -> None:
    # A week of growth lifts the 7-day mean; the 28-day one still sees the jump.
    spend = history(28, 1.0, 4.0)
    for i in range(1, 8):
        spend[TODAY - timedelta(days=i)] = 2.0
    found = find_anomalies({"acme": spend}, TODAY, ratio_7d=2, ratio_28d=3)
    assert [(a.window_days, round(a.baseline_usd, 2)) for a in found] == [(28, 1.25)]


def test_days_without_spend_count_as_zero_but_days_before_the_tenant_do_not() -> None:
    # First spend 5 days ago, one dollar then nothing: the mean is 1/5, not 1/7.
    spend = {TODAY - timedelta(days=5): 1.0, TODAY: 0.5}
    found = find_anomalies({"new": spend}, TODAY, ratio_7d=2, ratio_28d=3)
    assert [round(a.baseline_usd, 2) for a in found] == [0.2]


def test_a_tenant_with_too_little_history_or_no_spend_today_is_left_alone() -> None:
    daily = {
        "young": {TODAY - timedelta(days=1): 1.0, TODAY: 50.0},
        "idle": history(10, 1.0, 0.0),
    }
    assert find_anomalies(daily, TODAY, ratio_7d=2, ratio_28d=3) == []


async def test_the_watch_raises_one_event_per_tenant_and_day() -> None:
    from keel.config import AlertsConfig
    from keel.limits import MemoryLimits
    from keel.tenants import AnomalyWatch, Event, Notifier

    sent: list[Event] = []

    async def collect(event: Event) -> None:
        sent.append(event)

    def daily(since: date) -> dict[str, dict[date, float]]:
        assert since == TODAY - timedelta(days=28)
        return {"acme": history(10, 1.0, 5.0), "calm": history(10, 1.0, 1.0)}

    notifier = Notifier([collect])
    watch = AnomalyWatch(AlertsConfig(), daily, MemoryLimits(), notifier)
    assert [a.tenant for a in await watch.check(TODAY)] == ["acme"]
    await watch.check(TODAY)  # a second look the same day finds it again but sends nothing
    await notifier.drain()
    assert [(e.tenant, e.kind) for e in sent] == [("acme", "cost_anomaly")]
    assert sent[0].data["ratio"] == 5.0
