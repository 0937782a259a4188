"""The output sinks (log, store, OTLP) in a child process with its own GIL.

Why a process: the gateway is one event loop in one interpreter. Run on the
writer thread, the sinks' Python work (encoding rows, the log line, spans)
and the SQLite driver's GIL hand-overs took turns with the event loop. With
the sinks here, the writer thread only samples, counts metrics and encodes
each batch with one orjson call (``keel.telemetry.wire``). With the sinks
here, telemetry fully on costs the gateway about 5 points less of its
throughput than with them on the thread, in most runs of record
(bench/README.md, fourth to sixth passes).

The protocol is a pipe each way. The parent writes frames to the child's
stdin: first the record layout (``keel.telemetry.wire.LAYOUT``, which the
child checks against its own), then a handshake (what the child needs to
build its sinks), then one frame per batch. After each batch the child
writes one byte to the ack pipe: how many of its sinks failed.
``ProcessSink.write`` waits for that byte, so a batch is in every sink when
``write`` returns, as with sinks on the thread: ``TelemetryWriter.flush``
keeps its meaning and the queue stays the one place records wait. The child
runs in its own session, ignores SIGINT and SIGTERM (a supervisor may signal
every process of the service) and stops at the end of its stdin, after
closing its sinks; so the gateway's shutdown drain reaches the store, and a
gateway killed outright still leaves the child to finish the batch it has.
What a crash of the child loses is the one batch it was writing; the next
batch starts a new child. The first batch starts the first child, so a
gateway that serves nothing runs none.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO

from keel._gc import settle_after_start
from keel.telemetry.record import RequestRecord
from keel.telemetry.wire import LAYOUT, dumps_batch, frame, loads_batch, read_frame
from keel.telemetry.writer import Sink, write_all

log = logging.getLogger("keel.telemetry")

STOP_TIMEOUT_S = 30.0


class SinkProcessFailed(RuntimeError):
    """The child died, or some of its sinks failed on the batch (its log says why)."""


class ProcessSink:
    """The writer thread's side: one child process, started by the first batch.

    ``command`` runs the child; it gets the ack pipe's descriptor as its last
    argument and must call ``serve``. ``handshake`` is the frame it reads after the layout.
    A child that died is replaced by the next batch; none starts after ``close``.
    """

    name = "process"

    def __init__(self, command: Sequence[str], handshake: bytes) -> None:
        self._command = list(command)
        # The record layout goes first: the child checks it against its own.
        self._handshake = frame(LAYOUT) + frame(handshake)
        self._proc: subprocess.Popen[bytes] | None = None
        self._acks: int | None = None
        # Held for a whole batch: close() on the shutdown path must not pull
        # the pipes from under a write still running on the writer thread.
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None:
        payload = frame(dumps_batch(records, kept))
        with self._lock:
            if self._closed:
                raise SinkProcessFailed(f"the telemetry process is closed: {len(records)} records")
            if self._proc is not None and self._proc.poll() is not None:
                log.error("the telemetry process exited with code %s", self._stop(kill=True))
            try:
                if self._proc is None:
                    self._start()
                self._send(payload)
                failed = self._ack()
            except (OSError, EOFError) as exc:
                code = self._stop(kill=True)
                raise SinkProcessFailed(
                    f"the telemetry process stopped (exit code {code}) with {len(records)} records"
                ) from exc
        if failed:
            raise SinkProcessFailed(f"{failed} telemetry process sink(s) failed; see its log")

    def close(self) -> None:
        """Let the child finish and close its sinks; kill it if it hangs."""
        self._closed = True
        if not self._lock.acquire(timeout=STOP_TIMEOUT_S):
            # A batch is stuck (a database that never answers): killing the
            # child ends the writer's wait, which then gives the lock back.
            log.error("the telemetry process is stuck on a batch; killing it")
            proc = self._proc
            if proc is not None:
                proc.kill()
            self._lock.acquire()
        try:
            self._stop(kill=False)
        finally:
            self._lock.release()

    def _start(self) -> None:
        acks, ack_write = os.pipe()
        try:
            # Its own session: a terminal's Ctrl-C goes to the gateway, which
            # then drains into this child rather than past it.
            self._proc = subprocess.Popen(
                [*self._command, str(ack_write)],
                stdin=subprocess.PIPE,
                pass_fds=(ack_write,),
                start_new_session=True,
            )
        except BaseException:
            os.close(acks)
            raise
        finally:
            os.close(ack_write)  # the child holds its own copy: EOF here once it exits
        self._acks = acks
        self._send(self._handshake)
        # The child answers once its sinks are built: one that cannot start
        # (a bad database URL, an import error) fails this batch, not later.
        self._ack()

    def _send(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def _ack(self) -> int:
        assert self._acks is not None
        byte = os.read(self._acks, 1)
        if not byte:
            raise EOFError("the telemetry process closed its ack pipe")
        return byte[0]

    def _stop(self, *, kill: bool) -> int | None:
        proc, self._proc = self._proc, None
        if self._acks is not None:
            os.close(self._acks)
            self._acks = None
        if proc is None:
            return None
        if kill:
            proc.kill()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass  # the child is gone already: nothing was left to flush
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("the telemetry process did not finish within %ss; killing it", STOP_TIMEOUT_S)
            proc.kill()
            return proc.wait()


def serve(build: Callable[[bytes], Sequence[Sink]], argv: Sequence[str] | None = None) -> None:
    """The child's main loop: build the sinks from the handshake, then one batch per frame."""
    # A supervisor may signal every process of the service (systemd does, by
    # default): the child must outlive the gateway's drain, so it stops only
    # when its stdin ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="keel-telemetry %(levelname)s %(name)s: %(message)s"
    )
    args = sys.argv[1:] if argv is None else argv
    acks = int(args[-1])
    data: IO[bytes] = sys.stdin.buffer
    layout = read_frame(data)
    if layout is None:
        return  # the parent stopped before saying anything
    if layout != LAYOUT:
        # Exiting unanswered fails the batch in the gateway, which logs it.
        log.error("the gateway runs another version of Keel than this program; restart it")
        sys.exit(2)
    handshake = read_frame(data)
    if handshake is None:
        return
    sinks = build(handshake)
    # The sinks live as long as the child and each batch's records hold no
    # cycles: collections walking the startup objects and the batch in hand
    # were 6 % of the child's work (bench/README.md, sixth pass).
    settle_after_start()
    try:
        os.write(acks, b"\x00")  # ready
        while (payload := read_frame(data)) is not None:
            records, kept = loads_batch(payload)
            os.write(acks, bytes([min(255, write_all(sinks, records, kept))]))
    except BrokenPipeError:
        pass  # the gateway is gone; the batch it sent last is written
    finally:
        for sink in sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing telemetry sink %s failed", sink.name)
