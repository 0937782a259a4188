"""OTLP/HTTP export of request spans, called from the telemetry writer (process or thread).

A tracing backend outage must never reach a request or stop the writer:
export failures are logged and counted here, and the JSON request log
(telemetry/log.py) remains the record that survives them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

import keel
from keel.config import OTLPConfig
from keel.telemetry.record import RequestRecord
from keel.telemetry.spans import build_spans

__all__ = ["OTLPSink"]

_log = logging.getLogger(__name__)


class OTLPSink:
    """Turns batches of records into spans and posts them to one OTLP endpoint.

    Not thread-safe by design: exactly one writer thread owns it. ``exported``
    and ``failed`` count records (requests), not spans, so they compare
    directly with the writer's queue counters.
    """

    def __init__(self, config: OTLPConfig, *, capture_content: bool = False) -> None:
        self._endpoint = config.endpoint
        self._capture_content = capture_content
        # Built from config only, not Resource.create(): that would also read
        # OTEL_RESOURCE_ATTRIBUTES and run detectors, and Keel reads its
        # environment through config alone.
        self._resource = Resource(
            {
                "service.name": config.service_name,
                "service.version": keel.__version__,
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
            }
        )
        self._exporter = OTLPSpanExporter(
            endpoint=config.endpoint,
            headers={k: v.get_secret_value() for k, v in config.headers.items()},
            timeout=config.timeout_s,
        )
        self.exported = 0
        self.failed = 0
        self._closed = False

    def export(self, records: Sequence[RequestRecord]) -> None:
        """Send one batch; never raises. The exporter retries transient errors
        (429, 502, 503, 504, connection errors) within ``timeout_s``."""
        spans: list[ReadableSpan] = []
        sent = 0
        for record in records:
            try:
                built = build_spans(record, self._resource, capture_content=self._capture_content)
            except Exception:  # one malformed record must not cost the batch its traces
                _log.exception("could not build spans for request %s", record.request_id)
                self.failed += 1
                continue
            spans.extend(built)
            sent += 1
        if not spans:
            return
        try:
            result = self._exporter.export(spans)
        except Exception as exc:  # an exporter bug must not kill the writer thread
            # Only the type: a transport error's message can echo request
            # headers, and those carry the collector's API key.
            _log.error("OTLP export to %s raised %s", self._endpoint, type(exc).__name__)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += sent
            return
        _log.warning(
            "OTLP export of %d requests to %s failed; the exporter logged the status",
            sent,
            self._endpoint,
        )
        self.failed += sent

    def shutdown(self) -> None:
        """Release the HTTP session; idempotent. Later exports count as failed."""
        if self._closed:
            return
        self._closed = True
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped upstream def
