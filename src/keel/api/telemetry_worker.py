"""Where the gateway's telemetry leaves the process: the output sinks and their child process.

``output_sinks`` is the one list of sinks that write outside the gateway
(the JSON log, the request store, OTLP). The app builds it on the writer
thread (``telemetry.writer: thread``) or, by default, hands batches to a
child running this module (``python -m keel.api.telemetry_worker``), which
builds the same list from the handshake. See keel.telemetry.sink_process.
"""

from __future__ import annotations

import pickle
import sys

from keel.config import TelemetryConfig
from keel.store import RequestStore, make_engine
from keel.telemetry.log import RequestLog
from keel.telemetry.sink_process import ProcessSink, serve
from keel.telemetry.sinks import ExportSink, StoreSink
from keel.telemetry.writer import Sink


def output_sinks(telemetry: TelemetryConfig, requests: RequestStore) -> list[Sink]:
    sinks: list[Sink] = [RequestLog(telemetry.log), StoreSink(requests)]
    if telemetry.otlp is not None:
        from keel.telemetry.otlp import OTLPSink  # the OTLP stack only loads when configured

        otlp = OTLPSink(telemetry.otlp, capture_content=telemetry.capture_content)
        sinks.append(ExportSink(otlp))
    return sinks


def start_process(telemetry: TelemetryConfig, database_url: str) -> ProcessSink:
    """The sink that runs ``output_sinks`` in a child process of this module."""
    # Pickled, not JSON: the settings keep their types, SecretStr headers
    # included, and only ever travel over a pipe to this program's own child.
    handshake = pickle.dumps((telemetry, database_url))
    return ProcessSink([sys.executable, "-m", __name__], handshake)


def _build(handshake: bytes) -> list[Sink]:
    telemetry, database_url = pickle.loads(handshake)
    # No event loop shares this process's GIL: executemany beats one packed statement.
    requests = RequestStore(make_engine(database_url), pack_batches=False)
    return output_sinks(telemetry, requests)


if __name__ == "__main__":
    serve(_build)
