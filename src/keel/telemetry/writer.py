"""The telemetry writer: a bounded in-process queue drained by one thread.

The request path only appends a finished ``RequestRecord`` (no I/O, no
lock beyond the deque's own); the thread wakes every ``flush_interval_s`` or
when a batch is full, decides sampling, and hands the batch to each sink:
metrics, and the JSON log, the request store and OTLP, which by default sit
behind one ``ProcessSink`` (keel.telemetry.sink_process). A full queue drops the
record and counts it. Shutdown drains everything queued, so a SIGTERM loses
nothing; a crash (SIGKILL, power) loses at most what was queued, which is
bounded by ``flush_interval_s`` worth of traffic or ``queue_size`` records.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from keel.config import TelemetryConfig
from keel.telemetry.record import RequestRecord
from keel.telemetry.sampling import keep

log = logging.getLogger("keel.telemetry")


class Sink(Protocol):
    """Receives each batch with its sampling verdicts (writer thread or telemetry process)."""

    name: str

    def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class WriterStats:
    submitted: int = 0
    dropped: int = 0  # queue full
    written: int = 0  # records handed to every sink
    failed_batches: int = 0  # one per sink (or telemetry process) that raised on a batch


class TelemetryWriter:
    def __init__(
        self,
        config: TelemetryConfig,
        sinks: Sequence[Sink],
        *,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._config = config
        self._sinks = list(sinks)
        self._on_drop = on_drop
        self._queue: deque[RequestRecord] = deque()
        self._wake = threading.Event()
        # Held while a batch is taken and written, so flush() returns only once
        # every record queued before it is in every sink.
        self._busy = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = WriterStats()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, record: RequestRecord) -> None:
        """Queue a finished request. Called on the event loop; never blocks."""
        if len(self._queue) >= self._config.queue_size:
            self.stats.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return
        self._queue.append(record)
        self.stats.submitted += 1
        if len(self._queue) >= self._config.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="keel-telemetry", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain what is queued and stop; called from the app's shutdown."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("telemetry writer did not drain within %ss", timeout)
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing telemetry sink %s failed", sink.name)

    def flush(self) -> None:
        """Write everything queued so far before returning (tests, shutdown)."""
        self._drain(down_to=0)

    def _run(self) -> None:
        while not self._stopping:
            batch_full = self._wake.wait(self._config.flush_interval_s)
            self._wake.clear()
            # Woken by a full batch: whole batches only, the rest waits for the
            # next wake. Draining to empty sent what arrived during each batch's
            # write (a transaction, a pipe round trip: milliseconds) as a batch
            # of its own; under load batches averaged about 30 records instead
            # of 100, and the costs paid per batch went up threefold.
            self._drain(down_to=self._config.batch_size - 1 if batch_full else 0)
        self.flush()

    def _drain(self, *, down_to: int) -> None:
        """Write batches while more than ``down_to`` records are queued."""
        with self._busy:
            while len(self._queue) > down_to:
                self._write(self._take())

    def _take(self) -> list[RequestRecord]:
        batch: list[RequestRecord] = []
        queue = self._queue
        for _ in range(min(self._config.batch_size, len(queue))):
            batch.append(queue.popleft())
        return batch

    def _write(self, batch: list[RequestRecord]) -> None:
        if not batch:
            return
        sampling = self._config.sampling
        kept = [keep(record, sampling) for record in batch]
        self.stats.failed_batches += write_all(self._sinks, batch, kept)
        self.stats.written += len(batch)


def write_all(sinks: Sequence[Sink], records: Sequence[RequestRecord], kept: Sequence[bool]) -> int:
    """Hand the batch to every sink; how many of them failed (each is logged)."""
    failed = 0
    for sink in sinks:
        try:
            sink.write(records, kept)
        except Exception:
            # One broken sink (a database outage, a dead collector) must not
            # stop the others: the log line and metrics still go out.
            failed += 1
            log.exception("telemetry sink %s failed on %d records", sink.name, len(records))
    return failed
