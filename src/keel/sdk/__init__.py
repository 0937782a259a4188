"""The prompt SDK: fetch registry prompts from a Keel gateway, cached, from an application.

Owns the client side of ``GET /v1/prompts/{name}``: :class:`PromptClient`
(sync) and :class:`AsyncPromptClient` fetch the version a label points at
(or an exact version), keep it for ``ttl_s`` (an exact version for good),
serve the last known version with ``stale=True`` while the gateway is
unreachable (optionally from ``cache_dir`` on disk, for a process that
starts during an outage), render it locally with ``keel.prompts.render``,
or build the ``prompt`` reference the gateway renders itself. See
docs/sdk.md.

Runs in the application's process, not the gateway's: it may import httpx,
``keel.prompts`` (the file model and rendering) and ``keel.errors``; never
``keel.api``, ``keel.pipeline``, ``keel.store`` or ``keel.cli``. The sync and
async clients share one sans-I/O cache (``_cache.py``) and differ only in
how they send a GET.
"""

from __future__ import annotations

from keel.sdk._client import AsyncPromptClient, PromptClient
from keel.sdk._types import DEFAULT_LABEL, FetchedPrompt
from keel.sdk.errors import (
    PromptAuthError,
    PromptError,
    PromptNotFound,
    PromptRequestError,
    PromptUnavailable,
)

__all__ = [
    "DEFAULT_LABEL",
    "AsyncPromptClient",
    "FetchedPrompt",
    "PromptAuthError",
    "PromptClient",
    "PromptError",
    "PromptNotFound",
    "PromptRequestError",
    "PromptUnavailable",
]
