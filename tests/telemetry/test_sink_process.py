"""The output sinks in their own process: the wire format and the child's life."""

from __future__ import annotations

import io
import os
import pickle
import signal
import sqlite3
import sys
from dataclasses import fields
from pathlib import Path

import orjson
import pytest

from keel.api.telemetry_worker import start_process
from keel.config import LogConfig, TelemetryConfig
from keel.store import make_engine, upgrade
from keel.telemetry import RequestRecord, Usage
from keel.telemetry.sink_process import ProcessSink, SinkProcessFailed
from keel.telemetry.wire import dumps_batch, frame, loads_batch, read_frame
from telemetry_records import make_record


def full_record(n: int = 1) -> RequestRecord:
    return make_record(
        request_id=f"req_{n}",
        experiment="exp-1",
        shadow=True,
        extra={"shadow": {"score": 0.5, "same": False}},
        error_type="provider_all_upstreams_failed",
        usage=Usage(120, 30, 100, 10, True),
    )


def test_a_record_crosses_the_wire_unchanged() -> None:
    record = full_record()
    # Every field set away from its default, so a new field that does not
    # survive the round trip fails here rather than in a stored row.
    empty = (None, (), {}, False, 0, "")
    assert [f.name for f in fields(record) if getattr(record, f.name) in empty] == []
    records, kept = loads_batch(dumps_batch([record, make_record()], [True, False]))
    assert records == [record, make_record()]
    assert kept == [True, False]
    assert records[0].stages == (("auth", 0.0, 1.5), ("guardrail", 1.5, 3.0))


def test_a_child_with_another_record_layout_stores_nothing(
    tmp_path: Path, database: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # As after an upgrade in place: a new child whose code orders the fields
    # differently must refuse the batch, not file values under wrong columns.
    other_version = (
        "import keel.telemetry.sink_process as p; p.LAYOUT = b'[]';"
        "from keel.api.telemetry_worker import _build; p.serve(_build)"
    )
    handshake = pickle.dumps((telemetry(tmp_path), database))
    sink = ProcessSink([sys.executable, "-c", other_version], handshake)
    try:
        with pytest.raises(SinkProcessFailed, match=r"exit code 2"):
            sink.write([full_record()], [True])
    finally:
        sink.close()
    assert stored_ids(database) == []
    assert not (tmp_path / "req.log").exists()
    assert "another version of Keel" in capfd.readouterr().err


def test_frames_split_a_stream_and_a_cut_frame_is_an_error() -> None:
    stream = io.BytesIO(frame(b"one") + frame(b"") + frame(b"three"))
    assert [read_frame(stream), read_frame(stream), read_frame(stream)] == [b"one", b"", b"three"]
    assert read_frame(stream) is None
    with pytest.raises(EOFError, match="inside a frame header"):
        read_frame(io.BytesIO(b"\x00\x00"))
    with pytest.raises(EOFError, match="2 bytes into a frame"):
        read_frame(io.BytesIO(frame(b"four")[:-2]))


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    upgrade(make_engine(url))
    return url


def stored_ids(url: str) -> list[str]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM requests ORDER BY 1")]


def telemetry(tmp_path: Path) -> TelemetryConfig:
    return TelemetryConfig(log=LogConfig(destination="file", path=str(tmp_path / "req.log")))


def logged_ids(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "req.log").read_bytes().splitlines()
    return [orjson.loads(line)["request_id"] for line in lines]


def test_a_batch_is_stored_and_logged_when_write_returns(tmp_path: Path, database: str) -> None:
    sink = start_process(telemetry(tmp_path), database)
    assert sink.pid is None  # nothing served yet, no child
    try:
        sink.write([full_record(1), full_record(2)], [True, False])
        assert stored_ids(database) == ["req_1"]  # sampled out: logged, not stored
        assert logged_ids(tmp_path) == ["req_1", "req_2"]
        first = sink.pid
        sink.write([full_record(3)], [True])
        assert sink.pid == first  # one child for every batch
        assert stored_ids(database) == ["req_1", "req_3"]
    finally:
        sink.close()
    assert sink.pid is None


def test_the_child_ignores_sigterm_and_a_dead_child_is_replaced(
    tmp_path: Path, database: str
) -> None:
    sink = start_process(telemetry(tmp_path), database)
    try:
        sink.write([full_record(1)], [True])
        child = sink.pid
        assert child is not None
        # Out of reach of a terminal's signals to the gateway's group...
        assert os.getsid(child) == child
        # ... and a supervisor's SIGTERM to every process: it waits for its stdin to end.
        os.kill(child, signal.SIGTERM)
        sink.write([full_record(2)], [True])
        assert sink.pid == child
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        sink.write([full_record(3)], [True])
        assert sink.pid not in (None, child)
        assert stored_ids(database) == ["req_1", "req_2", "req_3"]
    finally:
        sink.close()


def test_a_child_that_dies_mid_batch_fails_that_batch(tmp_path: Path) -> None:
    # Reads the handshake's length, then exits without an ack.
    quitter = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(4)"]
    sink = ProcessSink(quitter, b"hello")
    try:
        with pytest.raises(SinkProcessFailed, match=r"stopped \(exit code 0\) with 1 records"):
            sink.write([full_record()], [True])
        assert sink.pid is None
    finally:
        sink.close()


def test_a_failing_sink_in_the_child_fails_the_batch_but_not_the_others(tmp_path: Path) -> None:
    # A database without its tables: the store fails, the log line still goes out.
    sink = start_process(telemetry(tmp_path), f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(SinkProcessFailed, match="1 telemetry process sink"):
            sink.write([full_record(1)], [True])
        assert logged_ids(tmp_path) == ["req_1"]
    finally:
        sink.close()


def test_a_record_json_cannot_hold_is_left_out_and_the_batch_goes_on(
    tmp_path: Path, database: str
) -> None:
    odd = make_record(request_id="req_odd", extra={"weights": {1: "non-string key"}})
    records, kept = loads_batch(dumps_batch([full_record(1), odd, full_record(2)], [True] * 3))
    assert [r.request_id for r in records] == ["req_1", "req_2"]
    assert kept == [True, True]


def test_no_child_starts_after_close_and_a_failed_start_leaks_nothing(tmp_path: Path) -> None:
    missing = ProcessSink([str(tmp_path / "no-such-python")], b"hello")
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(SinkProcessFailed, match="stopped"):
            missing.write([full_record()], [True])
    assert len(os.listdir("/proc/self/fd")) == fds
    missing.close()
    with pytest.raises(SinkProcessFailed, match="closed"):
        missing.write([full_record()], [True])
    assert missing.pid is None
