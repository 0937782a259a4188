"""Telemetry: what each request leaves behind and where it goes.

Owns the request record, W3C trace context, tail sampling, the writer thread
and its sinks (JSON log, Prometheus metrics, OTLP spans; the request store is
reached through a small protocol). Imports ``keel.config`` and its own
modules; never ``api``, ``cli`` or ``store``. Nothing here does I/O on the
request path: the path appends a record, the writer thread does the rest.
"""

from keel.telemetry.record import AttemptRecord, RequestRecord, StageRecord, Usage
from keel.telemetry.writer import Sink, TelemetryWriter, WriterStats

__all__ = [
    "AttemptRecord",
    "RequestRecord",
    "Sink",
    "StageRecord",
    "TelemetryWriter",
    "Usage",
    "WriterStats",
]
