"""The one seam between Keel and an upstream model server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Operation = Literal["chat", "embeddings"]
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One attempt against one deployment.

    ``body`` is the OpenAI-shaped request as the client sent it (after Keel's
    own fields are removed); adapters must not mutate it. ``model`` is the
    deployment's model name and replaces ``body["model"]`` on the wire.
    ``timeout`` bounds the whole attempt for ``send`` and the wait for the
    first chunk for ``stream``; ``idle_timeout`` bounds each later gap.
    """

    operation: Operation
    model: str
    body: Json
    timeout: float
    idle_timeout: float = 30.0


class Upstream(Protocol):
    """An adapter for one provider. Errors are raised as ``keel.errors.ProviderError``.

    ``send`` returns an OpenAI-shaped response body (chat.completion or the
    embeddings list). ``stream`` yields OpenAI ``chat.completion.chunk``
    dicts and always ends with a chunk carrying ``usage`` when the upstream
    reports it (adapters request usage even when the client did not).
    """

    async def send(self, call: UpstreamCall) -> Json: ...

    def stream(self, call: UpstreamCall) -> AsyncIterator[Json]: ...

    async def aclose(self) -> None: ...
