"""The simulator as an in-process ``Upstream``: no sockets, same behaviour as ``keel sim``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from types import TracebackType
from typing import NoReturn

from keel.config import SimulatorProvider
from keel.errors import InvalidRequest, ProviderError, UpstreamRejected, UpstreamTimeout
from keel.providers._errors import error_from_payload
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
    """What the ``openai_compat`` adapter raises for ``keel sim``'s answer to ``failure``.

    The failure is rendered as the server renders it (status, OpenAI error
    body, Retry-After headers) and mapped by the adapters' own table, so
    in-process and over HTTP cannot disagree.
    """
    if failure.kind == "timeout":
        # Over HTTP the server hangs and the adapter's own timeout fires.
        return UpstreamTimeout(failure.message)
    return error_from_payload(
        failure.status, _openai.error_body(failure), headers=failure.headers()
    )


class _Counted:
    """Counts one call in ``stats``: completed, failed, or cancelled by the caller.

    ``GeneratorExit`` is a caller closing a stream early, which is a cancel.
    Any other exception, a Keel bug included, counts as an error so
    ``in_flight`` never leaks.
    """

    __slots__ = ("_stats",)

    def __init__(self, stats: SimStats) -> None:
        self._stats = stats

    def __enter__(self) -> None:
        self._stats.begin()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self._stats.end("completed")
        elif issubclass(kind, (asyncio.CancelledError, GeneratorExit)):
            self._stats.end("cancelled")
        else:
            self._stats.end("error")


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
        with _Counted(self.engine.stats):
            return await self._send(call)

    async def _send(self, call: UpstreamCall) -> Json:
        result: Completion | Embeddings | Failure
        try:
            if call.operation == "embeddings":
                inputs = _openai.parse_embedding_input(call.body)
                result = self.engine.plan_embeddings(inputs, _openai.dimensions(call.body))
            else:
                result = self.engine.plan_chat(_openai.parse_chat(call.body))
        except InvalidRequest as error:
            raise to_error(Failure.invalid(error)) from None
        if isinstance(result, Failure):
            await self._fail(result, call.timeout)
        await _wait(result.latency_s, call.timeout)
        if isinstance(result, Completion):
            return _openai.completion_body(result, call.model)
        base64 = call.body.get("encoding_format") == "base64"
        return _openai.embeddings_body(result, call.model, base64=base64)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Json]:
        """Yield chunks; the last one always carries ``usage``."""
        with _Counted(self.engine.stats):
            # aclosing: an early stop by the caller must close the inner generator now.
            async with aclosing(self._stream(call)) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def _stream(self, call: UpstreamCall) -> AsyncGenerator[Json, None]:
        if call.operation != "chat":
            raise UpstreamRejected("only chat calls can stream", upstream_status=400)
        try:
            result = self.engine.plan_chat(_openai.parse_chat(call.body))
        except InvalidRequest as error:
            raise to_error(Failure.invalid(error)) from None
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
