"""Anthropic's Messages API behind the OpenAI shape, streaming included.

The wire work (auth headers, timeouts, SSE, error mapping) is shared with
``openai_compat`` through ``_http``; the format work is the pure functions in
``_anthropic_translate``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from keel.config import AnthropicProvider
from keel.errors import InvalidRequest, UpstreamProtocolError
from keel.providers._anthropic_translate import (
    StreamTranslator,
    to_anthropic_request,
    to_openai_response,
)
from keel.providers._errors import Json, error_from_payload, parse_object
from keel.providers._http import HttpClient, SSEEvent
from keel.providers.base import UpstreamCall


def _is_stop(event: SSEEvent) -> bool:
    # By the SSE event name, which Anthropic always sends: cheaper than parsing
    # the data twice. A server that omits it only loses connection reuse.
    return event.event == "message_stop"


class AnthropicUpstream:
    """An ``Upstream`` speaking ``POST /v1/messages``."""

    def __init__(self, config: AnthropicProvider, *, name: str) -> None:
        self.name = name
        self._url = f"{config.base_url.rstrip('/')}/v1/messages"
        self._default_max_tokens = config.default_max_tokens
        key = config.api_key.get_secret_value() if config.api_key else None
        headers = {
            "content-type": "application/json",
            "anthropic-version": config.anthropic_version,
        }
        if key:
            headers["x-api-key"] = key
        self._http = HttpClient(
            max_connections=config.max_connections, headers=headers, secrets=(key or "",)
        )

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
        response = await self._http.post_json(self._url, body, timeout=call.timeout)
        return to_openai_response(response)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Json]:
        """Yield OpenAI ``chat.completion.chunk`` dicts, ending with a usage chunk.

        Callers should close the iterator (``contextlib.aclosing``) when they
        stop early; closing or cancelling drops the upstream connection.
        """
        body = self._request(call)
        body["stream"] = True  # a fresh dict, so setting a key is safe
        translator = StreamTranslator(model=call.model)
        events = self._http.post_events(
            self._url,
            body,
            timeout=call.timeout,
            idle_timeout=call.idle_timeout,
            terminal=_is_stop,
        )
        async with aclosing(events):
            async for event in events:
                data = parse_object(event.data)
                if event.event == "error" or data.get("type") == "error":
                    raise error_from_payload(None, data, secrets=self._http.secrets)
                for chunk in translator.feed(data):
                    yield chunk
                if translator.done:
                    return
        # A cut stream must never pass for a complete one.
        raise UpstreamProtocolError("stream ended before message_stop")

    async def aclose(self) -> None:
        await self._http.aclose()
