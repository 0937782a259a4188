"""Adapters that put each telemetry backend behind the writer's ``Sink`` seam."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from keel.telemetry.record import RequestRecord


class BatchStore(Protocol):
    def write_batch(self, records: Sequence[RequestRecord], keep: Sequence[bool]) -> None: ...


class Observer(Protocol):
    def observe_batch(self, records: Sequence[RequestRecord]) -> None: ...


class Exporter(Protocol):
    def export(self, records: Sequence[RequestRecord]) -> None: ...

    def shutdown(self) -> None: ...


class StoreSink:
    """Rows for sampled requests; rollups for every request (the store decides)."""

    name = "store"

    def __init__(self, store: BatchStore) -> None:
        self._store = store

    def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None:
        self._store.write_batch(records, kept)

    def close(self) -> None:
        pass


class MetricsSink:
    """Counters see every request, sampled or not, so they stay exact."""

    name = "metrics"

    def __init__(self, metrics: Observer) -> None:
        self._metrics = metrics

    def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None:
        self._metrics.observe_batch(records)

    def close(self) -> None:
        pass


class ExportSink:
    """Only sampled requests leave the process."""

    name = "otlp"

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter

    def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None:
        chosen = [r for r, k in zip(records, kept, strict=True) if k]
        if chosen:
            self._exporter.export(chosen)

    def close(self) -> None:
        self._exporter.shutdown()
