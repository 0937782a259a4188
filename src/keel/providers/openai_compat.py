"""The OpenAI wire format: OpenAI itself and every server that speaks it.

Requests go out as the client sent them, with the deployment's model name;
responses come back untranslated. The only liberty taken is on streams:
usage is always requested, because Keel needs it to price the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from keel.config import OpenAICompatProvider
from keel.errors import InvalidRequest, UpstreamProtocolError
from keel.providers._http import (
    HttpClient,
    Json,
    error_from_payload,
    parse_object,
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
        return await self._http.post_json(url, body, timeout=call.timeout, secret=self._secret)

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
        events = self._http.post_events(
            self._chat_url,
            body,
            timeout=call.timeout,
            idle_timeout=call.idle_timeout,
            secret=self._secret,
        )
        async with aclosing(events):
            async for event in events:
                if event.data == _DONE:
                    return
                chunk = parse_object(event.data)
                if "error" in chunk:
                    raise error_from_payload(None, chunk, secret=self._secret)
                yield chunk
        # A cut stream must never pass for a complete one.
        raise UpstreamProtocolError("stream ended before [DONE]")

    async def aclose(self) -> None:
        await self._http.aclose()
