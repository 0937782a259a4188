"""Alias → deployment routing with retries, deadlines, breakers and fallbacks.

For one request the router walks the alias's chain: the alias itself, then
its ``fallbacks`` in order (not transitively, so the chain is what the config
says). Within an alias it makes up to ``retries + 1`` attempts, each on a
weighted choice among deployments whose breaker admits a call, preferring
ones not yet tried. Only retryable failures (connect errors, timeouts, 429,
5xx) are retried; any other upstream 4xx goes straight back to the caller,
except a context-window overflow, which jumps to the alias's
``context_fallback``. Streams get the same treatment until the first content
chunk; after that, see ``OpenedStream``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keel.config import Deployment, KeelConfig, ModelAlias
from keel.errors import (
    AllUpstreamsFailed,
    AttemptSummary,
    ContextWindowExceeded,
    DeadlineExceeded,
    NoHealthyUpstream,
    ProviderError,
    RoutingError,
    UpstreamTimeout,
)
from keel.providers.base import Json, Operation, Upstream, UpstreamCall
from keel.routing.breaker import CircuitBreaker

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class RouteResult:
    """What answered and how many tries it took."""

    alias: str
    deployment: str
    provider_model: str
    attempts: list[AttemptSummary]
    fallback_used: bool
    response: Json = field(default_factory=dict)

    @property
    def attempt_count(self) -> int:
        """Calls actually made upstream (a skipped open breaker is not one)."""
        return sum(1 for a in self.attempts if a.outcome != "breaker_open")


@dataclass(slots=True)
class OpenedStream:
    """A stream that has produced its first content chunk.

    ``head`` holds the chunks read so far (role, first content); iterate the
    stream to get them and everything after. Past this point a failure cannot
    be retried: iteration raises ``keel.errors.ProviderError`` subclasses and
    the caller reports them in-band.
    """

    route: RouteResult
    head: list[Json]
    rest: AsyncIterator[Json] | None
    breaker: CircuitBreaker

    async def chunks(self) -> AsyncIterator[Json]:
        for chunk in self.head:
            yield chunk
        if self.rest is None:
            return
        try:
            async for chunk in self.rest:
                yield chunk
        except ProviderError:
            self.breaker.record_failure()
            raise

    async def aclose(self) -> None:
        if self.rest is not None:
            await _aclose(self.rest)


@dataclass(slots=True)
class _Attempt:
    alias: ModelAlias
    deployment: Deployment
    upstream: Upstream
    breaker: CircuitBreaker
    call: UpstreamCall


class Router:
    def __init__(
        self,
        config: KeelConfig,
        upstreams: dict[str, Upstream],
        *,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._routing = config.routing
        self._aliases = {m.alias: m for m in config.models}
        self._upstreams = upstreams
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        for model in config.models:
            for deployment in model.deployments:
                if deployment.name not in self.breakers:
                    self.breakers[deployment.name] = CircuitBreaker(
                        config.routing.breaker, clock=clock
                    )

    def alias(self, name: str) -> ModelAlias | None:
        return self._aliases.get(name)

    def deadline_for(self, alias: ModelAlias) -> float:
        """The absolute (monotonic) deadline for a request that starts now."""
        return self._clock() + (alias.deadline_s or self._routing.deadline_s)

    async def send(
        self, alias: ModelAlias, operation: Operation, body: Json, *, deadline: float
    ) -> RouteResult:
        async def attempt(a: _Attempt) -> Json:
            return await a.upstream.send(a.call)

        route, response = await self._run(alias, operation, body, deadline, attempt)
        route.response = response
        return route

    async def open_stream(self, alias: ModelAlias, body: Json, *, deadline: float) -> OpenedStream:
        async def attempt(a: _Attempt) -> tuple[list[Json], AsyncIterator[Json] | None]:
            return await _read_until_content(a.upstream.stream(a.call), a.call.timeout)

        route, (head, rest) = await self._run(alias, "chat", body, deadline, attempt)
        return OpenedStream(route, head, rest, self.breakers[route.deployment])

    async def _run(
        self,
        alias: ModelAlias,
        operation: Operation,
        body: Json,
        deadline: float,
        attempt: Callable[[_Attempt], Awaitable[Any]],
    ) -> tuple[RouteResult, Any]:
        summaries: list[AttemptSummary] = []
        chain = [alias, *(self._aliases[name] for name in alias.fallbacks)]
        context_fallback_taken = False
        position = 0
        while position < len(chain):
            current = chain[position]
            try:
                answered = await self._try_alias(
                    current, operation, body, deadline, attempt, summaries
                )
            except ContextWindowExceeded:
                # Put the larger-context alias next in the chain, once per request.
                if current.context_fallback is None or context_fallback_taken:
                    raise
                context_fallback_taken = True
                chain.insert(position + 1, self._aliases[current.context_fallback])
                answered = None
            if answered is not None:
                deployment, result = answered
                route = RouteResult(
                    alias=current.alias,
                    deployment=deployment.name,
                    provider_model=deployment.model,
                    attempts=summaries,
                    fallback_used=current is not alias,
                )
                return route, result
            position += 1
        raise self._final_error(summaries, deadline)

    async def _try_alias(
        self,
        current: ModelAlias,
        operation: Operation,
        body: Json,
        deadline: float,
        attempt: Callable[[_Attempt], Awaitable[Any]],
        summaries: list[AttemptSummary],
    ) -> tuple[Deployment, Any] | None:
        """Up to ``retries + 1`` attempts on one alias; None means: try the next alias."""
        tried: set[str] = set()
        for retry in range(current.retries + 1):
            planned = self._plan(current, operation, body, deadline, tried, summaries)
            if planned is None:
                return None
            tried.add(planned.deployment.name)
            started = self._clock()
            try:
                result = await attempt(planned)
            except ProviderError as error:
                error.deployment = planned.deployment.name
                summaries.append(self._summary(planned, error, started))
                self._judge(planned.breaker, error)
                if not error.retryable:
                    raise
                if self._clock() >= deadline:
                    raise self._deadline_error(summaries) from error
                if retry < current.retries:
                    await self._backoff(retry, error, deadline, current, tried)
                continue
            except BaseException:
                planned.breaker.release()
                raise
            planned.breaker.record_success()
            elapsed = (self._clock() - started) * 1000
            summaries.append(
                AttemptSummary(current.alias, planned.deployment.name, "ok", 200, elapsed)
            )
            return planned.deployment, result
        return None

    def _plan(
        self,
        alias: ModelAlias,
        operation: Operation,
        body: Json,
        deadline: float,
        tried: set[str],
        summaries: list[AttemptSummary],
    ) -> _Attempt | None:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise self._deadline_error(summaries)
        deployment = self._choose(alias, body, tried, summaries)
        if deployment is None:
            return None
        call = UpstreamCall(
            operation=operation,
            model=deployment.model,
            body=body,
            timeout=min(alias.timeout_s, remaining),
            idle_timeout=self._routing.stream_idle_timeout_s,
        )
        return _Attempt(
            alias,
            deployment,
            self._upstreams[deployment.provider],
            self.breakers[deployment.name],
            call,
        )

    def _choose(
        self,
        alias: ModelAlias,
        body: Json,
        tried: set[str],
        summaries: list[AttemptSummary],
    ) -> Deployment | None:
        fits = [d for d in alias.deployments if _fits_context(d, body)]
        if not fits:
            summaries.append(AttemptSummary(alias.alias, "-", "context_length_exceeded", None, 0.0))
            raise ContextWindowExceeded(
                f'the prompt is longer than every context window of alias "{alias.alias}"',
                upstream_status=400,
            )
        fresh = [d for d in fits if d.name not in tried] or fits
        # Probing a half-open breaker claims its single slot, so ask lazily and
        # only of the deployment we are about to use.
        candidates = list(fresh)
        while candidates:
            pick = self._weighted(candidates)
            if self.breakers[pick.name].allow():
                return pick
            candidates.remove(pick)
        for d in fresh:
            summaries.append(AttemptSummary(alias.alias, d.name, "breaker_open", None, 0.0))
        return None

    def _weighted(self, deployments: list[Deployment]) -> Deployment:
        if len(deployments) == 1:
            return deployments[0]
        total = sum(d.weight for d in deployments)
        point = self._rng.random() * total
        for d in deployments:
            point -= d.weight
            if point < 0:
                return d
        return deployments[-1]

    async def _backoff(
        self,
        retry: int,
        error: ProviderError,
        deadline: float,
        alias: ModelAlias,
        tried: set[str],
    ) -> None:
        untried_left = any(d.name not in tried for d in alias.deployments)
        if error.retry_after is not None:
            wait = min(error.retry_after, self._routing.max_retry_after_s)
        elif untried_left:
            return  # another deployment is ready now; no reason to wait
        else:
            # Full jitter: spreads retries of many clients over the whole window.
            ceiling = min(self._routing.backoff_max_s, self._routing.backoff_base_s * 2**retry)
            wait = self._rng.uniform(0, ceiling)
        wait = min(wait, max(0.0, deadline - self._clock()))
        if wait > 0:
            await self._sleep(wait)

    @staticmethod
    def _judge(breaker: CircuitBreaker, error: ProviderError) -> None:
        # A request the upstream rejected says nothing about the upstream's health.
        if error.retryable:
            breaker.record_failure()
        else:
            breaker.release()

    def _summary(self, a: _Attempt, error: ProviderError, started: float) -> AttemptSummary:
        return AttemptSummary(
            a.alias.alias,
            a.deployment.name,
            error.code,
            error.upstream_status,
            (self._clock() - started) * 1000,
            error.message,
        )

    def _deadline_error(self, summaries: list[AttemptSummary]) -> RoutingError:
        return DeadlineExceeded(
            "the request's deadline passed before an upstream answered: "
            + RoutingError.summarize(summaries),
            summaries,
        )

    def _final_error(self, summaries: list[AttemptSummary], deadline: float) -> RoutingError:
        if self._clock() >= deadline:
            return self._deadline_error(summaries)
        made = [s for s in summaries if s.outcome != "breaker_open"]
        if not made:
            return NoHealthyUpstream(
                "every deployment's circuit breaker is open: " + RoutingError.summarize(summaries),
                summaries,
            )
        return AllUpstreamsFailed(
            f"all {len(made)} upstream attempts failed: " + RoutingError.summarize(summaries),
            summaries,
        )


def _fits_context(deployment: Deployment, body: Json) -> bool:
    """Cheap pre-check against a configured context window (chars / 4 ≈ tokens).

    The estimate errs low, so a request that might fit is still tried and the
    upstream's own context error stays the authority.
    """
    if deployment.context_window is None:
        return True
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    wanted = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return chars // 4 + int(wanted) <= deployment.context_window


def _has_content(chunk: Json) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("finish_reason"):
            return True
    return False


async def _read_until_content(
    stream: AsyncIterator[Json], timeout: float
) -> tuple[list[Json], AsyncIterator[Json] | None]:
    """Read chunks until one carries content; the whole wait is bounded."""
    head: list[Json] = []
    try:
        async with asyncio.timeout(timeout):
            async for chunk in stream:
                head.append(chunk)
                if _has_content(chunk):
                    return head, stream
    except TimeoutError as exc:
        await _aclose(stream)
        raise UpstreamTimeout(f"no content within {timeout:g}s") from exc
    except BaseException:
        await _aclose(stream)
        raise
    return head, None


async def _aclose(stream: AsyncIterator[Json]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
