"""Prometheus metrics for GET /metrics, fed a batch of RequestRecords at a time.

The telemetry writer hands over a whole batch, and the series are plain
dicts updated under one lock per batch: no lock per increment and no
per-child objects, which is what prometheus_client's own Counter and
Histogram cost (about 12 µs per request for the series below, against
about 2 µs this way). prometheus_client still renders the text format, from
a collector that reads these dicts at scrape time. Every instance owns its
registry (no process-global default registry), so tests and several apps in
one process never collide. docs/telemetry.md lists every series with its
labels.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import utils as prometheus_utils
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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

Labels = tuple[str, ...]
# The "le" spelling prometheus_client's own histograms use (Go's float format).
_le = cast(Callable[[float], str], prometheus_utils.floatToGoString)


class _Counter:
    """One counter family: label values -> running total."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Sequence[str] = ()) -> None:
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self.values: dict[Labels, float] = {}

    def add(self, key: Labels, amount: float) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def touch(self, key: Labels) -> None:
        """Show a zero for ``key``, so rate() sees the series before its first event."""
        self.values.setdefault(key, 0.0)

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        return family


class _Histogram:
    """One histogram family: label values -> [count per bucket ..., +Inf count, sum]."""

    __slots__ = ("bounds", "doc", "labels", "les", "name", "values")

    def __init__(self, name: str, doc: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self.bounds = tuple(float(b) for b in bounds)
        self.les = [*(_le(b) for b in self.bounds), "+Inf"]
        self.values: dict[Labels, list[float]] = {}

    def observe(self, key: Labels, value: float) -> None:
        cell = self.values.get(key)
        if cell is None:
            cell = self.values[key] = [0.0] * (len(self.bounds) + 2)
        # bisect_left: the first bucket whose upper bound is >= value ("le").
        cell[bisect_left(self.bounds, value)] += 1
        cell[-1] += value

    def touch(self, key: Labels) -> None:
        self.values.setdefault(key, [0.0] * (len(self.bounds) + 2))

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, cell in self.values.items():
            running = 0.0
            buckets = []
            for le, count in zip(self.les, cell, strict=False):
                running += count
                buckets.append((le, running))
            family.add_metric(key, buckets, cell[-1])
        return family


class Metrics:
    """All of Keel's Prometheus series, on a registry of this instance's own.

    ``known_aliases``: the configured alias names; any other requested alias
    is counted as ``_other``. ``None`` keeps every alias (tests, tools).
    """

    def __init__(self, known_aliases: Collection[str] | None = None) -> None:
        self._known = frozenset(known_aliases) if known_aliases is not None else None
        self._lock = threading.Lock()
        at = ("alias", "tenant")
        self._requests = _Counter("keel_requests", "Requests by outcome.", ("status", *at))
        self._duration = _Histogram(
            "keel_request_duration_seconds",
            "Request latency through Keel.",
            ("alias",),
            _LATENCY_BUCKETS,
        )
        self._ttft = _Histogram(
            "keel_ttft_seconds",
            "Time to first token of streamed requests.",
            ("alias",),
            _TTFT_BUCKETS,
        )
        self._tokens = _Counter(
            "keel_tokens", "Tokens; cached_input is a subset of input.", ("type", *at)
        )
        self._cost = _Counter("keel_cost_usd", "Spend of requests with a known price.", at)
        self._unknown_cost = _Counter(
            "keel_unknown_cost_requests", "Requests whose price is unknown.", ("alias",)
        )
        self._upstream_errors = _Counter(
            "keel_upstream_errors", "Upstream attempts not ok.", ("deployment", "outcome")
        )
        self._retries = _Counter("keel_retries", "Upstream calls beyond the first.", ("alias",))
        self._fallbacks = _Counter(
            "keel_fallbacks", "Requests answered by a fallback alias.", ("alias",)
        )
        self._feedback = _Counter("keel_feedback", "Feedback by sign.", ("score",))
        self._dropped = _Counter("keel_telemetry_dropped", "Records the telemetry queue dropped.")
        genai = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
        self._genai_tokens = _Histogram(
            "gen_ai_client_token_usage",
            "OTel GenAI: tokens per request.",
            (*genai, "gen_ai_token_type"),
            _GENAI_TOKEN_BUCKETS,
        )
        self._genai_duration = _Histogram(
            "gen_ai_client_operation_duration_seconds",
            "OTel GenAI: request duration.",
            (*genai, "error_type"),
            _GENAI_DURATION_BUCKETS,
        )
        for key in (("positive",), ("negative",)):
            self._feedback.touch(key)
        self._dropped.touch(())
        self._gauges = _Gauges()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(
            _Collector(
                self._lock,
                (
                    self._requests,
                    self._duration,
                    self._ttft,
                    self._tokens,
                    self._cost,
                    self._unknown_cost,
                    self._upstream_errors,
                    self._retries,
                    self._fallbacks,
                    self._feedback,
                    self._dropped,
                    self._genai_tokens,
                    self._genai_duration,
                ),
                self._gauges,
            )
        )

    # --- the telemetry writer ---------------------------------------------------

    def observe_batch(self, records: Iterable[RequestRecord]) -> None:
        """Count finished requests: one lock for the whole batch."""
        with self._lock:
            for record in records:
                self._observe(record)

    def _observe(self, record: RequestRecord) -> None:
        alias = self._alias(record.alias)
        tenant = record.tenant or ""
        # Every (alias, tenant) seen has a cost entry, zero or not.
        if (alias, tenant) not in self._cost.values:
            self._first_pair(alias, tenant)
        by_alias = (alias,)
        usage = record.usage
        seconds = record.latency_ms / 1000.0
        ok = record.status == "ok"

        self._requests.add(("ok" if ok else "error", alias, tenant), 1)
        tokens = self._tokens
        if usage.input_tokens:
            tokens.add(("input", alias, tenant), usage.input_tokens)
        if usage.cached_input_tokens:
            tokens.add(("cached_input", alias, tenant), usage.cached_input_tokens)
        if usage.output_tokens:
            tokens.add(("output", alias, tenant), usage.output_tokens)
        # Unknown prices are counted apart, never added as zero: a sum that
        # silently omits them would look like real, lower spend.
        if record.cost_usd is None:
            self._unknown_cost.add(by_alias, 1)
        elif record.cost_usd:
            self._cost.add((alias, tenant), record.cost_usd)
        self._duration.observe(by_alias, seconds)
        if record.ttft_ms is not None:
            self._ttft.observe(by_alias, record.ttft_ms / 1000.0)
        retries = record.retries
        if retries:
            self._retries.add(by_alias, retries)
        if record.fallback_used:
            self._fallbacks.add(by_alias, 1)
        for attempt in record.attempts:
            # Skipped attempts (breaker_open, context_skipped) count too: a
            # deployment skipped for being open is still a deployment in trouble.
            if attempt.outcome != "ok":
                self._upstream_errors.add((attempt.deployment, attempt.outcome), 1)

        self._observe_genai(record, alias, seconds, ok)

    def _observe_genai(self, record: RequestRecord, alias: str, seconds: float, ok: bool) -> None:
        usage = record.usage
        error_type = "" if ok else (record.error_type or "error")
        operation, provider = record.operation, record.provider or ""
        genai = (operation, provider, alias, error_type)
        if genai not in self._genai_duration.values:
            self._first_genai(genai)
        self._genai_duration.observe(genai, seconds)
        if ok:
            self._genai_tokens.observe((operation, provider, alias, "input"), usage.input_tokens)
            self._genai_tokens.observe((operation, provider, alias, "output"), usage.output_tokens)

    def _alias(self, alias: str | None) -> str:
        if alias is None:
            return ""
        if self._known is not None and alias not in self._known:
            return OTHER_ALIAS
        return alias

    def _first_pair(self, alias: str, tenant: str) -> None:
        """Zeros for an (alias, tenant) seen for the first time, so its series all exist."""
        for status in ("ok", "error"):
            self._requests.touch((status, alias, tenant))
        for kind in ("input", "cached_input", "output"):
            self._tokens.touch((kind, alias, tenant))
        self._cost.touch((alias, tenant))
        if (alias,) not in self._duration.values:
            for series in (
                self._duration,
                self._ttft,
                self._unknown_cost,
                self._retries,
                self._fallbacks,
            ):
                series.touch((alias,))

    def _first_genai(self, key: Labels) -> None:
        operation, provider, alias, _ = key
        self._genai_duration.touch(key)
        for kind in ("input", "output"):
            self._genai_tokens.touch((operation, provider, alias, kind))

    # --- other producers ------------------------------------------------------

    def feedback(self, score: float) -> None:
        """A user's verdict on the API's 0..1 scale (thumbs up 1, down 0).

        Graded scores split at the midpoint: 0.5 and above count as positive.
        """
        with self._lock:
            self._feedback.add(("positive",) if score >= 0.5 else ("negative",), 1)

    def dropped(self, n: int = 1) -> None:
        """Called by the telemetry writer when its queue overflows."""
        if n > 0:
            with self._lock:
                self._dropped.add((), n)

    def set_queue_depth_source(self, fn: Callable[[], int]) -> None:
        """Read at scrape time, so the writer pays nothing per record."""
        self._gauges.queue_depth = fn

    def set_breaker_source(self, fn: Callable[[], Mapping[str, str]]) -> None:
        """``fn()`` -> {deployment: "closed" | "half_open" | "open"}, read at scrape time."""
        self._gauges.breakers = fn

    def render(self) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics, in the Prometheus text format."""
        return generate_latest(self.registry), CONTENT_TYPE


class _Gauges:
    """Gauges whose value lives elsewhere (writer queue, breakers): read on scrape."""

    def __init__(self) -> None:
        self.queue_depth: Callable[[], int] | None = None
        self.breakers: Callable[[], Mapping[str, str]] | None = None

    def families(self, *, read: bool) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "keel_telemetry_queue_depth", "Records waiting in the telemetry queue."
        )
        if read and self.queue_depth is not None:
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
        if read and self.breakers is not None:
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


class _Collector(Collector):
    """Turns the series' dicts into metric families when scraped."""

    def __init__(
        self, lock: threading.Lock, series: Sequence[_Counter | _Histogram], gauges: _Gauges
    ) -> None:
        self._lock = lock
        self._series = series
        self._gauges = gauges

    def describe(self) -> list[Metric]:
        # Names only, so the registry can reject a duplicate at register time
        # without calling the gauge sources (which may not be set yet).
        return [*self._snapshot(), *self._gauges.families(read=False)]

    def collect(self) -> Iterator[Metric]:
        yield from self._snapshot()
        yield from self._gauges.families(read=True)

    def _snapshot(self) -> list[Metric]:
        with self._lock:
            return [series.family() for series in self._series]
