"""The limits backend a config names, and pushing a kill switch to it at once."""

from __future__ import annotations

from keel.config import KeelConfig
from keel.limits import LimitsBackend, open_limits


def open_backend(config: KeelConfig) -> LimitsBackend:
    """Memory for one process (the embedded default); Redis, shared by every replica."""
    limits = config.limits
    url = limits.redis_url if limits.backend == "redis" else None
    return open_limits(url, prefix=limits.redis_prefix, timeout_s=limits.redis_timeout_s)


async def propagate_suspension(config: KeelConfig, tenant: str, reason: str | None) -> None:
    """Set (or, with ``reason=None``, clear) a suspension on the shared backend.

    The store stays the record and every replica re-reads it within
    ``limits.refresh_s``; on Redis this makes the switch take effect on the
    very next request. A memory backend lives in the gateway's process, which
    only the store can reach, so there is nothing to do here for it.
    """
    if config.limits.backend != "redis":
        return
    backend = open_backend(config)
    try:
        await backend.set_suspended(tenant, reason)
    finally:
        await backend.aclose()
