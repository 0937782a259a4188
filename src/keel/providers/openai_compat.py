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
from keel.providers._errors import Json, error_from_payload, parse_object
from keel.providers._http import HttpClient, SSEEvent
from keel.providers.base import UpstreamCall

_DONE = b"[DONE]"


def _is_done(event: SSEEvent) -> bool:
    return event.data == _DONE


def _checked(chunk: Json) -> Json:
    """``chunk`` if its shape is safe for the gateway to read, else a protocol error.

    Cheap on purpose (runs per chunk): only what later code indexes into is
    checked, so a malformed chunk fails this attempt here, where it can be
    retried, instead of tripping the gateway mid-stream.
    """
    choices = chunk.get("choices")
    if choices is not None:
        if not isinstance(choices, list):
            raise UpstreamProtocolError("upstream sent a stream chunk whose choices is not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise UpstreamProtocolError("upstream sent a stream chunk with a non-object choice")
            delta = choice.get("delta")
            if delta is not None and not isinstance(delta, dict):
                raise UpstreamProtocolError("upstream sent a stream chunk with a non-object delta")
    usage = chunk.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise UpstreamProtocolError("upstream sent a stream chunk whose usage is not an object")
    return chunk


class OpenAICompatUpstream:
    """An ``Upstream`` for any OpenAI-compatible ``/chat/completions`` server."""

    def __init__(self, config: OpenAICompatProvider, *, name: str) -> None:
        self.name = name
        base = config.base_url.rstrip("/")
        self._chat_url = f"{base}/chat/completions"
        self._embeddings_url = f"{base}/embeddings"
        key = config.api_key.get_secret_value() if config.api_key else None
        extra = {name: value.get_secret_value() for name, value in config.headers.items()}
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        headers.update(extra)  # explicit config wins, e.g. an org header
        # Custom headers often carry credentials (Azure's api-key, gateway
        # tokens), so every value is redacted from echoed upstream text.
        self._http = HttpClient(
            max_connections=config.max_connections,
            headers=headers,
            secrets=(key or "", *extra.values()),
        )

    async def send(self, call: UpstreamCall) -> Json:
        body = {**call.body, "model": call.model}  # shallow: call.body is not ours
        if call.operation == "chat":
            url = self._chat_url
            # A non-streamed attempt must not ask for SSE, whatever the client sent.
            body.pop("stream", None)
            body.pop("stream_options", None)
        else:
            url = self._embeddings_url
        return await self._http.post_json(url, body, timeout=call.timeout)

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
            terminal=_is_done,
        )
        async with aclosing(events):
            async for event in events:
                if event.data == _DONE:
                    return
                chunk = parse_object(event.data)
                if "error" in chunk:
                    raise error_from_payload(None, chunk, secrets=self._http.secrets)
                yield _checked(chunk)
        # A cut stream must never pass for a complete one.
        raise UpstreamProtocolError("stream ended before [DONE]")

    async def aclose(self) -> None:
        await self._http.aclose()
