"""The OpenAI wire format: OpenAI itself and every server that speaks it.

Requests go out as the client sent them, with the deployment's model name;
responses come back untranslated. The only liberty taken is on streams:
usage is always requested, because Keel needs it to price the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson

from keel.config import OpenAICompatProvider
from keel.errors import InvalidRequest, UpstreamProtocolError
from keel.providers._http import (
    HttpClient,
    Json,
    error_from_payload,
    finish,
    parse_object,
    read_error,
    sse_events,
    translating,
)
from keel.providers.base import UpstreamCall

_DONE = b"[DONE]"


class OpenAICompatUpstream:
    """An ``Upstream`` for any OpenAI-compatible ``/chat/completions`` server."""

    def __init__(self, config: OpenAICompatProvider, *, name: str) -> None:
        self.name = name
        base = config.base_url.rstrip("/")
        self._chat_url = f"{base}/chat/completions"
        self._embeddings_url = f"{base}/embeddings"
        self._secret = config.api_key.get_secret_value() if config.api_key else None
        headers = {"content-type": "application/json"}
        if self._secret:
            headers["authorization"] = f"Bearer {self._secret}"
        headers.update(config.headers)  # explicit config wins, e.g. an org header
        self._http = HttpClient(max_connections=config.max_connections, headers=headers)

    async def send(self, call: UpstreamCall) -> Json:
        body = {**call.body, "model": call.model}  # shallow: call.body is not ours
        if call.operation == "chat":
            url = self._chat_url
            # A non-streamed attempt must not ask for SSE, whatever the client sent.
            body.pop("stream", None)
            body.pop("stream_options", None)
        else:
            url = self._embeddings_url
        with translating:
            async with asyncio.timeout(call.timeout):
                response = await self._http.post(url, body)
                try:
                    if not 200 <= response.status < 300:
                        raise await read_error(response, self._secret)
                    raw = await response.read()
                finally:
                    finish(response)
        return parse_object(raw)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Json]:
        """Yield ``chat.completion.chunk`` dicts up to ``[DONE]``.

        Callers should close the iterator (``contextlib.aclosing``) when they
        stop early; closing or cancelling drops the upstream connection.
        """
        if call.operation != "chat":
            raise InvalidRequest("only chat completions can be streamed", param="stream")
        options = call.body.get("stream_options")
        body = {
            **call.body,
            "model": call.model,
            "stream": True,
            "stream_options": {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            },
        }
        deadline = asyncio.get_running_loop().time() + call.timeout
        with translating:
            async with asyncio.timeout_at(deadline):
                response = await self._http.post(self._chat_url, body)
            try:
                if not 200 <= response.status < 300:
                    async with asyncio.timeout_at(deadline):
                        raise await read_error(response, self._secret)
                events = sse_events(
                    response, first_deadline=deadline, idle_timeout=call.idle_timeout
                )
                async with aclosing(events):
                    async for event in events:
                        if event.data == _DONE:
                            return
                        chunk = orjson.loads(event.data)
                        if not isinstance(chunk, dict):
                            raise UpstreamProtocolError("upstream sent a non-object chunk")
                        if "error" in chunk:
                            raise error_from_payload(None, chunk, secret=self._secret)
                        yield chunk
                # A cut stream must never pass for a complete one.
                raise UpstreamProtocolError("stream ended before [DONE]")
            finally:
                finish(response)

    async def aclose(self) -> None:
        await self._http.aclose()
