"""The HTTP edge: the OpenAI-compatible data plane and health endpoints.

Owns ASGI plumbing (bodies, headers, streaming, disconnects) and the mapping
of ``KeelError`` to OpenAI error bodies. Calls into ``pipeline`` and the
domain packages; nothing imports ``api``.
"""

from keel.api.app import KeelApp, create_app
from keel.api.state import AppState

__all__ = ["AppState", "KeelApp", "create_app"]
