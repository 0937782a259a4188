"""Prometheus metrics for GET /metrics, fed one RequestRecord at a time.

``Metrics.observe`` runs on the request path, so it does no string building
and no label validation per call: label children are resolved once per label
combination and cached. Every instance owns its registry (no process-global
default registry), so tests and several apps in one process never collide.
docs/telemetry.md lists every series with its labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keel.telemetry.record import RequestRecord

_log = logging.getLogger(__name__)

__all__ = ["BREAKER_STATE_VALUES", "CONTENT_TYPE", "OTHER_ALIAS", "Metrics"]

BREAKER_STATE_VALUES: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}
# Requested aliases outside the configured set collapse into this label value:
# a client typing model names at random must not mint new series.
OTHER_ALIAS = "_other"
# Every name here is a legacy-valid Prometheus name, so generate_latest's
# output is the classic 0.0.4 text format; declaring that (not the client's
# newer default) keeps every scraper version happy.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# LLM calls run from milliseconds (cache hits) to minutes (long generations).
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
_TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6)
# Bucket boundaries recommended by the OTel GenAI metric conventions.
_GENAI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_GENAI_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _AliasTenant:
    ok: Counter
    error: Counter
    input_tokens: Counter
    cached_tokens: Counter
    output_tokens: Counter
    cost: Counter


@dataclass(frozen=True, slots=True)
class _Alias:
    duration: Histogram
    ttft: Histogram
    unknown_cost: Counter
    retries: Counter
    fallbacks: Counter


@dataclass(frozen=True, slots=True)
class _GenAI:
    input_usage: Histogram
    output_usage: Histogram
    duration: Histogram


class Metrics:
    """All of Keel's Prometheus series, on a registry of this instance's own.

    ``known_aliases``: the configured alias names; any other requested alias
    is counted as ``_other``. ``None`` keeps every alias (tests, tools).
    """

    def __init__(self, known_aliases: Collection[str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._known = frozenset(known_aliases) if known_aliases is not None else None
        r = self.registry
        at = ("alias", "tenant")
        self._requests = Counter(
            "keel_requests", "Requests by outcome.", ("status", *at), registry=r
        )
        self._duration = Histogram(
            "keel_request_duration_seconds",
            "Request latency through Keel.",
            ("alias",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._ttft = Histogram(
            "keel_ttft_seconds",
            "Time to first token of streamed requests.",
            ("alias",),
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self._tokens = Counter(
            "keel_tokens", "Tokens; cached_input is a subset of input.", ("type", *at), registry=r
        )
        self._cost = Counter(
            "keel_cost_usd", "Spend of requests with a known price.", at, registry=r
        )
        self._unknown_cost = Counter(
            "keel_unknown_cost_requests", "Requests whose price is unknown.", ("alias",), registry=r
        )
        self._upstream_errors = Counter(
            "keel_upstream_errors",
            "Upstream attempts not ok.",
            ("deployment", "outcome"),
            registry=r,
        )
        self._retries = Counter(
            "keel_retries", "Upstream calls beyond the first.", ("alias",), registry=r
        )
        self._fallbacks = Counter(
            "keel_fallbacks", "Requests answered by a fallback alias.", ("alias",), registry=r
        )
        self._feedback = Counter("keel_feedback", "Feedback by sign.", ("score",), registry=r)
        self._dropped = Counter(
            "keel_telemetry_dropped", "Records the telemetry queue dropped.", registry=r
        )
        genai = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
        self._genai_tokens = Histogram(
            "gen_ai_client_token_usage",
            "OTel GenAI: tokens per request.",
            (*genai, "gen_ai_token_type"),
            buckets=_GENAI_TOKEN_BUCKETS,
            registry=r,
        )
        self._genai_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "OTel GenAI: request duration.",
            (*genai, "error_type"),
            buckets=_GENAI_DURATION_BUCKETS,
            registry=r,
        )
        self._positive = self._feedback.labels("positive")
        self._negative = self._feedback.labels("negative")
        self._by_alias_tenant: dict[tuple[str, str], _AliasTenant] = {}
        self._by_alias: dict[str, _Alias] = {}
        self._by_genai: dict[tuple[str, str, str, str], _GenAI] = {}
        self._by_upstream: dict[tuple[str, str], Counter] = {}
        self._callbacks = _Callbacks()
        r.register(self._callbacks)

    # --- request path ---------------------------------------------------------

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request. Cheap: cached children, no allocation of labels."""
        alias = self._alias(record.alias)
        tenant = record.tenant or ""
        pair = self._by_alias_tenant.get((alias, tenant)) or self._alias_tenant(alias, tenant)
        single = self._by_alias.get(alias) or self._single(alias)
        usage = record.usage
        seconds = record.latency_ms / 1000.0

        (pair.ok if record.status == "ok" else pair.error).inc()
        if usage.input_tokens:
            pair.input_tokens.inc(usage.input_tokens)
        if usage.cached_input_tokens:
            pair.cached_tokens.inc(usage.cached_input_tokens)
        if usage.output_tokens:
            pair.output_tokens.inc(usage.output_tokens)
        # Unknown prices are counted apart, never added as zero: a sum that
        # silently omits them would look like real, lower spend.
        if record.cost_usd is None:
            single.unknown_cost.inc()
        elif record.cost_usd:
            pair.cost.inc(record.cost_usd)
        single.duration.observe(seconds)
        if record.ttft_ms is not None:
            single.ttft.observe(record.ttft_ms / 1000.0)
        retries = record.retries
        if retries:
            single.retries.inc(retries)
        if record.fallback_used:
            single.fallbacks.inc()
        for attempt in record.attempts:
            if attempt.outcome != "ok":
                self._upstream_error(attempt.deployment, attempt.outcome)
        self._observe_genai(record, alias, seconds)

    def _upstream_error(self, deployment: str, outcome: str) -> None:
        # Skipped attempts (breaker_open, context_skipped) count too: a
        # deployment skipped for being open is still a deployment in trouble.
        key = (deployment, outcome)
        child = self._by_upstream.get(key)
        if child is None:
            child = self._by_upstream[key] = self._upstream_errors.labels(*key)
        child.inc()

    def _observe_genai(self, record: RequestRecord, alias: str, seconds: float) -> None:
        error_type = (record.error_type or "error") if record.status == "error" else ""
        key = (record.operation, record.provider or "", alias, error_type)
        genai = self._by_genai.get(key) or self._genai(key)
        genai.duration.observe(seconds)
        if record.status == "ok":
            genai.input_usage.observe(record.usage.input_tokens)
            genai.output_usage.observe(record.usage.output_tokens)

    # --- other producers ------------------------------------------------------

    def feedback(self, score: float) -> None:
        """A user's verdict on the API's 0..1 scale (thumbs up 1, down 0).

        Graded scores split at the midpoint: 0.5 and above count as positive.
        """
        (self._positive if score >= 0.5 else self._negative).inc()

    def dropped(self, n: int = 1) -> None:
        """Called by the telemetry writer when its queue overflows."""
        if n > 0:
            self._dropped.inc(n)

    def set_queue_depth_source(self, fn: Callable[[], int]) -> None:
        """Read at scrape time, so the writer pays nothing per record."""
        self._callbacks.queue_depth = fn

    def set_breaker_source(self, fn: Callable[[], Mapping[str, str]]) -> None:
        """``fn()`` -> {deployment: "closed" | "half_open" | "open"}, read at scrape time."""
        self._callbacks.breakers = fn

    def render(self) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics, in the Prometheus text format."""
        return generate_latest(self.registry), CONTENT_TYPE

    # --- cache fills (once per label combination) -------------------------------

    def _alias(self, alias: str | None) -> str:
        if alias is None:
            return ""
        if self._known is not None and alias not in self._known:
            return OTHER_ALIAS
        return alias

    def _alias_tenant(self, alias: str, tenant: str) -> _AliasTenant:
        bundle = _AliasTenant(
            ok=self._requests.labels("ok", alias, tenant),
            error=self._requests.labels("error", alias, tenant),
            input_tokens=self._tokens.labels("input", alias, tenant),
            cached_tokens=self._tokens.labels("cached_input", alias, tenant),
            output_tokens=self._tokens.labels("output", alias, tenant),
            cost=self._cost.labels(alias, tenant),
        )
        self._by_alias_tenant[(alias, tenant)] = bundle
        return bundle

    def _single(self, alias: str) -> _Alias:
        bundle = _Alias(
            duration=self._duration.labels(alias),
            ttft=self._ttft.labels(alias),
            unknown_cost=self._unknown_cost.labels(alias),
            retries=self._retries.labels(alias),
            fallbacks=self._fallbacks.labels(alias),
        )
        self._by_alias[alias] = bundle
        return bundle

    def _genai(self, key: tuple[str, str, str, str]) -> _GenAI:
        operation, provider, alias, error_type = key
        bundle = _GenAI(
            input_usage=self._genai_tokens.labels(operation, provider, alias, "input"),
            output_usage=self._genai_tokens.labels(operation, provider, alias, "output"),
            duration=self._genai_duration.labels(operation, provider, alias, error_type),
        )
        self._by_genai[key] = bundle
        return bundle


class _Callbacks(Collector):
    """Gauges whose value lives elsewhere (writer queue, breakers): read on scrape."""

    def __init__(self) -> None:
        self.queue_depth: Callable[[], int] | None = None
        self.breakers: Callable[[], Mapping[str, str]] | None = None

    def describe(self) -> list[Metric]:
        # Fixed names, so the registry can reject a duplicate at register time
        # without calling the sources (which may not be set yet).
        return [
            GaugeMetricFamily("keel_telemetry_queue_depth", ""),
            GaugeMetricFamily("keel_breaker_state", "", labels=["deployment"]),
        ]

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "keel_telemetry_queue_depth", "Records waiting in the telemetry queue."
        )
        if self.queue_depth is not None:
            try:
                depth.add_metric([], float(self.queue_depth()))
            except Exception:  # a broken source must not fail the whole scrape
                _log.exception("telemetry queue depth source failed")
        yield depth
        states = GaugeMetricFamily(
            "keel_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half_open, 2 open.",
            labels=["deployment"],
        )
        if self.breakers is not None:
            try:
                current = sorted(self.breakers().items())
            except Exception:  # a broken source must not fail the whole scrape
                _log.exception("breaker state source failed")
                current = []
            for deployment, state in current:
                # A state this module does not know is shown as open: alerting
                # on a breaker that might be open beats hiding it.
                states.add_metric([deployment], float(BREAKER_STATE_VALUES.get(str(state), 2)))
        yield states
