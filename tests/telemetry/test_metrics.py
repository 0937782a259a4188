"""Metrics: render() shows the right series and values after observe()."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel.telemetry import Usage
from keel.telemetry.metrics import Metrics
from telemetry_records import make_record


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def get(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_render_returns_prometheus_text() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE keel_requests_total counter" in body


def test_observe_counts_requests_tokens_cost_and_latency() -> None:
    m = Metrics()
    m.observe_batch([make_record()])
    m.observe_batch([make_record()])
    at = {"alias": "fast", "tenant": "acme"}
    assert get(m, "keel_requests_total", status="ok", **at) == 2
    assert get(m, "keel_requests_total", status="error", **at) == 0
    assert get(m, "keel_tokens_total", type="input", **at) == 240
    assert get(m, "keel_tokens_total", type="cached_input", **at) == 200
    assert get(m, "keel_tokens_total", type="output", **at) == 60
    assert get(m, "keel_cost_usd_total", **at) == pytest.approx(0.005)
    assert get(m, "keel_unknown_cost_requests_total", alias="fast") == 0
    assert get(m, "keel_request_duration_seconds_count", alias="fast") == 2
    assert get(m, "keel_request_duration_seconds_sum", alias="fast") == pytest.approx(1.7)
    assert get(m, "keel_request_duration_seconds_bucket", alias="fast", le="1.0") == 2
    assert get(m, "keel_request_duration_seconds_bucket", alias="fast", le="0.5") == 0
    assert get(m, "keel_ttft_seconds_sum", alias="fast") == pytest.approx(0.42)


def test_observe_counts_upstream_errors_retries_and_fallbacks() -> None:
    m = Metrics()
    m.observe_batch([make_record()])
    assert (
        get(
            m,
            "keel_upstream_errors_total",
            deployment="azure/gpt-4o",
            outcome="provider_unavailable",
        )
        == 1
    )
    assert (
        get(m, "keel_upstream_errors_total", deployment="backup/gpt-4o", outcome="breaker_open")
        == 1
    )
    assert get(m, "keel_retries_total", alias="fast") == 1  # the skipped attempt is no retry
    assert get(m, "keel_fallbacks_total", alias="fast") == 1


def test_failed_request_and_unknown_cost() -> None:
    m = Metrics()
    m.observe_batch(
        [
            make_record(
                status="error",
                error_type="provider_all_upstreams_failed",
                cost_usd=None,
                served_alias=None,
                usage=Usage(),
                ttft_ms=None,
                tenant=None,
            )
        ]
    )
    assert get(m, "keel_requests_total", status="error", alias="fast", tenant="") == 1
    assert get(m, "keel_unknown_cost_requests_total", alias="fast") == 1
    assert get(m, "keel_cost_usd_total", alias="fast", tenant="") == 0
    assert get(m, "keel_fallbacks_total", alias="fast") == 0
    assert get(m, "keel_ttft_seconds_count", alias="fast") == 0
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "fast",
    }
    assert (
        get(
            m,
            "gen_ai_client_operation_duration_seconds_count",
            error_type="provider_all_upstreams_failed",
            **genai,
        )
        == 1
    )


def test_genai_convention_histograms() -> None:
    m = Metrics()
    m.observe_batch([make_record()])
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "fast",
    }
    assert get(m, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **genai) == 120
    assert get(m, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **genai) == 30
    assert get(
        m, "gen_ai_client_operation_duration_seconds_sum", error_type="", **genai
    ) == pytest.approx(0.85)


def test_unknown_aliases_collapse_so_clients_cannot_mint_series() -> None:
    m = Metrics(known_aliases={"fast"})
    m.observe_batch(
        [make_record(alias="typo-1", status="error"), make_record(alias="typo-2", status="error")]
    )
    assert get(m, "keel_requests_total", status="error", alias="_other", tenant="acme") == 2
    assert not any("typo" in str(key) for key in samples(m))


def test_feedback_dropped_and_callback_gauges() -> None:
    m = Metrics()
    m.feedback(True)
    m.feedback(0.9)
    m.feedback(0.2)
    m.dropped(3)
    m.dropped(0)
    depth = [5]
    m.set_queue_depth_source(lambda: depth[0])
    m.set_breaker_source(lambda: {"a/x": "closed", "b/y": "half_open", "c/z": "open"})
    assert get(m, "keel_feedback_total", score="positive") == 2
    assert get(m, "keel_feedback_total", score="negative") == 1
    assert get(m, "keel_telemetry_dropped_total") == 3
    assert get(m, "keel_telemetry_queue_depth") == 5
    depth[0] = 0
    assert get(m, "keel_telemetry_queue_depth") == 0
    assert get(m, "keel_breaker_state", deployment="a/x") == 0
    assert get(m, "keel_breaker_state", deployment="b/y") == 1
    assert get(m, "keel_breaker_state", deployment="c/z") == 2


def test_a_broken_gauge_source_does_not_break_the_scrape() -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("router gone")

    m = Metrics()
    m.set_breaker_source(broken)
    m.observe_batch([make_record()])
    assert get(m, "keel_requests_total", status="ok", alias="fast", tenant="acme") == 1


def test_instances_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.observe_batch([make_record()])
    assert get(b, "keel_requests_total", status="ok", alias="fast", tenant="acme") is None


def test_every_metric_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "telemetry.md").read_text()
    m = Metrics()
    m.observe_batch([make_record()])
    # The registry's own families: counters without _total, no _created series.
    families = {f.name for f in m.registry.collect()}
    missing = [
        name for name in families if f"`{name}`" not in docs and f"`{name}_total`" not in docs
    ]
    assert not missing, f"docs/telemetry.md does not mention {missing}"


def test_scrapes_while_the_writer_counts_see_whole_batches() -> None:
    # New tenants add dict entries during the batches: without the lock, a
    # scrape would iterate a dict that changes size under it.
    m = Metrics()
    batches = [[make_record(tenant=f"t{b}-{i}") for i in range(20)] for b in range(100)]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for batch in batches:
                m.observe_batch(batch)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[float] = []
    while thread.is_alive() and len(seen) < 1000:
        total = sum(
            value for (name, _), value in samples(m).items() if name == "keel_requests_total"
        )
        seen.append(total)
    thread.join()
    assert not errors
    assert all(total % 20 == 0 for total in seen)  # never part of a batch
    assert sum(v for (n, _), v in samples(m).items() if n == "keel_requests_total") == 2000
