"""The HTTP edge: the OpenAI-compatible data plane and health endpoints.

Owns ASGI plumbing (bodies, headers, streaming, disconnects) and the mapping
of ``KeelError`` to OpenAI error bodies. Calls into ``pipeline`` and the
domain packages; nothing imports ``api``.
"""

from keel.api.app import AppState, KeelApp, create_app

__all__ = ["AppState", "KeelApp", "create_app"]
