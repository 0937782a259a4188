"""Tail-based sampling: decided once the request is over, on what happened."""

from __future__ import annotations

from keel.config import SamplingConfig
from keel.telemetry.record import RequestRecord

_SPACE = float(1 << 32)


def keep(record: RequestRecord, config: SamplingConfig) -> bool:
    """Every error, slow request, experiment cohort and shadow call; a share of the rest.

    The share is decided by the trace id, so every service that samples the
    same trace the same way keeps or drops it together.
    """
    if record.status == "error" or record.latency_ms >= config.slow_ms:
        return True
    if record.variant is not None or record.shadow:
        return True
    if config.rate >= 1.0:
        return True
    return int(record.trace_id[:8], 16) / _SPACE < config.rate
