"""The simulator as an in-process ``Upstream``: no sockets, same behaviour as ``keel sim``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import NoReturn

from keel.config import SimulatorProvider
from keel.errors import (
    ContextWindowExceeded,
    InvalidRequest,
    ProviderError,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from keel.providers.base import Json, UpstreamCall
from keel.providers.simulator import _openai
from keel.providers.simulator.engine import (
    Completion,
    Embeddings,
    Failure,
    SimStats,
    SimulatorEngine,
)


def to_error(failure: Failure) -> ProviderError:
    """The ``keel.errors`` class a real adapter would raise for the same HTTP answer."""
    status, message = failure.status, failure.message
    if failure.kind == "context_length":
        return ContextWindowExceeded(message, upstream_status=status, param=failure.param)
    if failure.kind == "timeout":
        return UpstreamTimeout(message)
    if status == 429:
        return UpstreamRateLimited(message, upstream_status=status, retry_after=failure.retry_after)
    if status >= 500:
        return UpstreamUnavailable(message, upstream_status=status)
    if status in (401, 403):
        return UpstreamAuthError(message, upstream_status=status)
    return UpstreamRejected(message, upstream_status=status, param=failure.param)


def _rejected(error: InvalidRequest) -> UpstreamRejected:
    return UpstreamRejected(error.message, upstream_status=400, param=error.param)


class SimulatorUpstream:
    """An ``Upstream`` that simulates a model server in-process.

    ``stats`` counts requests, completed, errors and cancelled calls (a call
    is cancelled when the caller cancels ``send`` or stops iterating
    ``stream`` early), so gateway tests can prove a client disconnect reached
    the upstream.
    """

    def __init__(self, config: SimulatorProvider, *, name: str = "sim") -> None:
        self.name = name
        self.engine = SimulatorEngine(config)

    @property
    def stats(self) -> SimStats:
        return self.engine.stats

    async def send(self, call: UpstreamCall) -> Json:
        stats = self.engine.stats
        stats.begin()
        try:
            body = await self._send(call)
        except asyncio.CancelledError:
            stats.end("cancelled")
            raise
        except ProviderError:
            stats.end("error")
            raise
        stats.end("completed")
        return body

    async def _send(self, call: UpstreamCall) -> Json:
        result: Completion | Embeddings | Failure
        try:
            if call.operation == "embeddings":
                inputs = _openai.parse_embedding_input(call.body)
                result = self.engine.plan_embeddings(inputs, _openai.dimensions(call.body))
            else:
                result = self.engine.plan_chat(_openai.parse_chat(call.body))
        except InvalidRequest as error:
            raise _rejected(error) from None
        if isinstance(result, Failure):
            await self._fail(result, call.timeout)
        await _wait(result.latency_s, call.timeout)
        if isinstance(result, Completion):
            return _openai.completion_body(result, call.model)
        base64 = call.body.get("encoding_format") == "base64"
        return _openai.embeddings_body(result, call.model, base64=base64)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Json]:
        """Yield chunks; the last one always carries ``usage``."""
        stats = self.engine.stats
        stats.begin()
        try:
            # aclosing: an early stop by the caller must close the inner generator now.
            async with aclosing(self._stream(call)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            stats.end("cancelled")
            raise
        except ProviderError:
            stats.end("error")
            raise
        stats.end("completed")

    async def _stream(self, call: UpstreamCall) -> AsyncGenerator[Json, None]:
        if call.operation != "chat":
            raise UpstreamRejected("only chat calls can stream", upstream_status=400)
        try:
            result = self.engine.plan_chat(_openai.parse_chat(call.body))
        except InvalidRequest as error:
            raise _rejected(error) from None
        if isinstance(result, Failure):
            await self._fail(result, call.timeout)
        limit = call.timeout
        for delay, chunk in _openai.chunks(result, call.model, include_usage=True):
            if delay:
                await _wait(delay, limit)
            limit = call.idle_timeout
            yield chunk

    @staticmethod
    async def _fail(failure: Failure, timeout: float) -> NoReturn:
        if failure.kind == "timeout":
            # A hung upstream: nothing arrives until the caller's own timeout fires.
            await asyncio.sleep(timeout)
        raise to_error(failure)

    async def aclose(self) -> None:
        """Nothing to release; present for the ``Upstream`` protocol."""


async def _wait(delay: float, limit: float) -> None:
    """Sleep ``delay``, or raise ``UpstreamTimeout`` after ``limit`` if that comes first."""
    if delay <= 0:
        return
    if delay > limit:
        await asyncio.sleep(limit)
        raise UpstreamTimeout(f"no response within {limit:g}s")
    await asyncio.sleep(delay)
