"""Anthropic's Messages API behind the OpenAI shape, streaming included.

The wire work (auth headers, timeouts, SSE, error mapping) is shared with
``openai_compat`` through ``_http``; the format work is the pure functions in
``_anthropic_translate``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson

from keel.config import AnthropicProvider
from keel.errors import InvalidRequest, UpstreamProtocolError
from keel.providers._anthropic_translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_response,
)
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


class AnthropicUpstream:
    """An ``Upstream`` speaking ``POST /v1/messages``."""

    def __init__(self, config: AnthropicProvider, *, name: str) -> None:
        self.name = name
        self._url = f"{config.base_url.rstrip('/')}/v1/messages"
        self._default_max_tokens = config.default_max_tokens
        self._secret = config.api_key.get_secret_value() if config.api_key else None
        headers = {
            "content-type": "application/json",
            "anthropic-version": config.anthropic_version,
        }
        if self._secret:
            headers["x-api-key"] = self._secret
        self._http = HttpClient(max_connections=config.max_connections, headers=headers)

    def _request(self, call: UpstreamCall) -> Json:
        if call.operation != "chat":
            raise InvalidRequest(
                "Anthropic has no embeddings API; route embeddings to another provider",
                param="model",
            )
        return to_anthropic_request(
            call.body, model=call.model, default_max_tokens=self._default_max_tokens
        )

    async def send(self, call: UpstreamCall) -> Json:
        body = self._request(call)
        with translating:
            async with asyncio.timeout(call.timeout):
                response = await self._http.post(self._url, body)
                try:
                    if not 200 <= response.status < 300:
                        raise await read_error(response, self._secret)
                    raw = await response.read()
                finally:
                    finish(response)
        return to_openai_response(parse_object(raw))

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Json]:
        """Yield OpenAI ``chat.completion.chunk`` dicts, ending with a usage chunk.

        Callers should close the iterator (``contextlib.aclosing``) when they
        stop early; closing or cancelling drops the upstream connection.
        """
        body = self._request(call)
        body["stream"] = True  # a fresh dict, so setting a key is safe
        translator = StreamTranslator(model=call.model)
        deadline = asyncio.get_running_loop().time() + call.timeout
        with translating:
            async with asyncio.timeout_at(deadline):
                response = await self._http.post(self._url, body)
            try:
                if not 200 <= response.status < 300:
                    async with asyncio.timeout_at(deadline):
                        raise await read_error(response, self._secret)
                events = sse_events(
                    response, first_deadline=deadline, idle_timeout=call.idle_timeout
                )
                async with aclosing(events):
                    async for event in events:
                        data = orjson.loads(event.data)
                        if not isinstance(data, dict):
                            raise UpstreamProtocolError("upstream sent a non-object event")
                        if event.event == "error" or data.get("type") == "error":
                            raise error_from_payload(None, data, secret=self._secret)
                        for chunk in translator.feed(data):
                            yield chunk
                        if translator.done:
                            return
                # A cut stream must never pass for a complete one.
                raise UpstreamProtocolError("stream ended before message_stop")
            finally:
                finish(response)

    async def aclose(self) -> None:
        await self._http.aclose()
