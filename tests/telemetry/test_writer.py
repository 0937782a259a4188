"""The writer's queue, sampling and sink isolation, with recording sinks."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from keel.config import SamplingConfig, TelemetryConfig
from keel.telemetry import RequestRecord, TelemetryWriter, Usage
from keel.telemetry.sampling import keep


def record(n: int = 0, **changes: Any) -> RequestRecord:
    base = RequestRecord(
        request_id=f"r{n}",
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        parent_span_id=None,
        started_at=1_800_000_000.0,
        operation="chat",
        stream=False,
        http_status=200,
        status="ok",
        error_type=None,
        tenant="acme",
        key_id=1,
        end_user=None,
        feature=None,
        metadata={},
        alias="fast",
        served_alias="fast",
        deployment="p/m",
        provider="p",
        provider_model="m",
        response_model="m",
        finish_reasons=("stop",),
        usage=Usage(input_tokens=10, output_tokens=5),
        cost_usd=0.001,
        latency_ms=20.0,
        ttft_ms=None,
        attempts=(),
        stages=(),
    )
    return replace(base, **changes)


class Recording:
    def __init__(self, name: str = "rec", fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.batches: list[tuple[list[str], list[bool]]] = []
        self.closed = False

    def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None:
        if self.fail:
            raise RuntimeError("sink down")
        self.batches.append(([r.request_id for r in records], list(kept)))

    def close(self) -> None:
        self.closed = True


def test_batches_reach_every_sink_even_when_one_fails() -> None:
    broken, good = Recording("broken", fail=True), Recording("good")
    writer = TelemetryWriter(TelemetryConfig(batch_size=2), [broken, good])
    for n in range(5):
        writer.submit(record(n))
    writer.flush()
    assert [ids for ids, _ in good.batches] == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    assert writer.stats.failed_batches == 3
    assert writer.stats.written == 5


def test_a_full_queue_drops_and_counts() -> None:
    dropped: list[int] = []
    sink = Recording()
    writer = TelemetryWriter(TelemetryConfig(queue_size=3), [sink], on_drop=dropped.append)
    for n in range(5):
        writer.submit(record(n))
    writer.flush()
    assert writer.stats.dropped == 2 and sum(dropped) == 2
    assert sink.batches[0][0] == ["r0", "r1", "r2"]


def test_stop_drains_everything_queued_and_closes_sinks() -> None:
    sink = Recording()
    # A long interval: only the stop can have written these.
    writer = TelemetryWriter(TelemetryConfig(flush_interval_s=3600, batch_size=1000), [sink])
    writer.start()
    for n in range(50):
        writer.submit(record(n))
    writer.stop()
    assert sum(len(ids) for ids, _ in sink.batches) == 50
    assert sink.closed


def test_sampling_keeps_errors_slow_and_cohorts_and_a_share_of_the_rest() -> None:
    never = SamplingConfig(rate=0.0, slow_ms=1000)
    assert not keep(record(1), never)
    assert keep(record(1, status="error", http_status=502), never)
    assert keep(record(1, latency_ms=1500.0), never)
    assert keep(record(1, variant="b"), never)
    assert keep(record(1, shadow=True), never)
    half = SamplingConfig(rate=0.5)
    rng = random.Random(1)
    traces = [f"{rng.getrandbits(128):032x}" for _ in range(4000)]
    kept = sum(keep(record(0, trace_id=t), half) for t in traces)
    assert 1800 < kept < 2200
    # The verdict depends on the trace only, so it is the same every time.
    assert keep(record(7), half) == keep(record(7), half)


def test_sampling_verdicts_reach_the_sinks() -> None:
    sink = Recording()
    config = TelemetryConfig(sampling=SamplingConfig(rate=0.0))
    writer = TelemetryWriter(config, [sink])
    writer.submit(record(1))
    writer.submit(record(2, status="error"))
    writer.flush()
    assert sink.batches == [(["r1", "r2"], [False, True])]


def test_under_load_the_writer_sends_whole_batches() -> None:
    # What arrives while a batch is being written waits for a whole batch (or
    # the interval) instead of going out as a small batch of its own.
    release, written = threading.Event(), threading.Event()

    class Slow(Recording):
        def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None:
            assert release.wait(10)
            super().write(records, kept)
            written.set()

    sink = Slow()
    writer = TelemetryWriter(TelemetryConfig(batch_size=3, flush_interval_s=3600), [sink])
    writer.start()
    try:
        for n in range(5):  # the third wakes the writer; two arrive during its write
            writer.submit(record(n))
        release.set()
        assert written.wait(10)
        with writer._busy:  # the writer's turn is over
            assert writer.depth == 2
        writer.submit(record(5))
        writer.flush()
    finally:
        writer.stop()
    assert [ids for ids, _ in sink.batches] == [["r0", "r1", "r2"], ["r3", "r4", "r5"]]
