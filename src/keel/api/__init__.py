"""The HTTP edge: the OpenAI-compatible data plane and health endpoints.

Owns ASGI plumbing (bodies, headers, streaming, disconnects) and the mapping
of ``KeelError`` to OpenAI error bodies. Calls into ``pipeline`` and the
domain packages; nothing imports ``api``. Importing the package loads none
of the app: the telemetry process (``keel.api.telemetry_worker``) starts
inside it and needs only the store and the sinks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.api.app import KeelApp, create_app
    from keel.api.state import AppState

_EXPORTS = {
    "AppState": "keel.api.state",
    "KeelApp": "keel.api.app",
    "create_app": "keel.api.app",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["AppState", "KeelApp", "create_app"]
