"""One JSON line per request: the record that survives any tracing outage."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from keel.config import LogConfig
from keel.telemetry.record import RequestRecord

_LINE = orjson.OPT_APPEND_NEWLINE


def log_fields(record: RequestRecord) -> dict[str, Any]:
    usage = record.usage
    return {
        "ts": datetime.fromtimestamp(record.started_at, UTC).isoformat(timespec="milliseconds"),
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "tenant": record.tenant,
        "user": record.end_user,
        "feature": record.feature,
        "alias": record.alias,
        "deployment": record.deployment,
        "provider_model": record.provider_model,
        "prompt_name": record.prompt_name,
        "prompt_version": record.prompt_version,
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "usage_estimated": usage.estimated,
        "cost_usd": record.cost_usd,
        "latency_ms_total": round(record.latency_ms, 2),
        "ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 2),
        "status": record.status,
        "http_status": record.http_status,
        "error_type": record.error_type,
        "cache": record.cache,
        "guardrail": record.guardrail,
        "experiment": record.experiment,
        "variant": record.variant,
        "attempts": record.attempt_count,
        "stream": record.stream,
    }


class RequestLog:
    """Writes a batch of lines at once; a sink of the telemetry writer.

    Every request gets its line, sampled or not: the log is the record that
    must survive any tracing backend outage.
    """

    name = "log"

    def __init__(self, config: LogConfig) -> None:
        self._config = config
        self._file: IO[bytes] | None = None

    def write(self, records: Sequence[RequestRecord], kept: Sequence[bool]) -> None:
        if self._config.destination == "off" or not records:
            return
        lines = b"".join([orjson.dumps(log_fields(r), option=_LINE) for r in records])
        out = self._stream()
        out.write(lines)
        out.flush()

    def _stream(self) -> IO[bytes]:
        if self._config.destination == "stdout":
            return sys.stdout.buffer
        if self._file is None:
            path = Path(self._config.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
