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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.config import Deployment, KeelConfig, ModelAlias
from keel.errors import (
    SKIPPED_OUTCOMES,
    AllUpstreamsFailed,
    AttemptSummary,
    ContextWindowExceeded,
    DeadlineExceeded,
    NoHealthyUpstream,
    ProviderError,
    RoutingError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from keel.providers.base import Json, Operation, Upstream, UpstreamCall
from keel.routing.breaker import Admission, CircuitBreaker
from keel.tokens import prompt_chars, tokens_for_chars

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class RouteResult:
    """What answered and how many tries it took."""

    alias: str
    deployment: str
    attempts: list[AttemptSummary]
    fallback_used: bool
    response: Json = field(default_factory=dict)

    @property
    def attempt_count(self) -> int:
        """Calls actually made upstream (a skipped deployment is not one)."""
        return sum(1 for a in self.attempts if a.outcome not in SKIPPED_OUTCOMES)


@dataclass(frozen=True, slots=True)
class _Target:
    """A deployment with everything an attempt needs, resolved once at start."""

    deployment: Deployment
    name: str
    breaker: CircuitBreaker
    upstream: Upstream


@dataclass(slots=True)
class OpenedStream:
    """A stream that has produced its first content chunk.

    ``head`` holds the chunks read so far (role, first content); iterate
    ``chunks()`` to get them and everything after. Past this point a failure
    cannot be retried: iteration raises ``keel.errors.ProviderError``
    subclasses and the caller reports them in-band.
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
        except ProviderError as error:
            # The opening already counted as this call's success; only a failure
            # that speaks of the upstream's health may still count against it.
            judge(self.breaker, Admission.CALL, error)
            raise

    async def aclose(self) -> None:
        if self.rest is not None:
            await _aclose(self.rest)


def judge(breaker: CircuitBreaker, admission: Admission, error: ProviderError) -> None:
    """A failed call's verdict: only failures of the upstream count against it."""
    if error.retryable:
        breaker.record_failure(admission)
    else:
        breaker.release(admission)


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
        self._routing = config.routing
        self._aliases = {m.alias: m for m in config.models}
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self._targets: dict[str, list[_Target]] = {}
        for model in config.models:
            targets = []
            for deployment in model.deployments:
                name = deployment.name
                breaker = self.breakers.get(name) or CircuitBreaker(
                    config.routing.breaker, clock=clock
                )
                self.breakers[name] = breaker
                targets.append(_Target(deployment, name, breaker, upstreams[deployment.provider]))
            self._targets[model.alias] = targets

    def alias(self, name: str) -> ModelAlias | None:
        return self._aliases.get(name)

    def deadline_for(self, alias: ModelAlias, started: float | None = None) -> float:
        """The absolute (monotonic) deadline of a request that started at ``started``."""
        begin = self._clock() if started is None else started
        return begin + (alias.deadline_s or self._routing.deadline_s)

    async def send(
        self, alias: ModelAlias, operation: Operation, body: Json, *, deadline: float
    ) -> RouteResult:
        async def attempt(call: UpstreamCall, upstream: Upstream) -> Json:
            # Bounded here too, so an adapter that ignores call.timeout cannot
            # carry a request past its deadline.
            async with asyncio.timeout(call.timeout):
                return await upstream.send(call)

        route, response = await self._run(alias, operation, body, deadline, attempt)
        route.response = response
        return route

    async def open_stream(self, alias: ModelAlias, body: Json, *, deadline: float) -> OpenedStream:
        async def attempt(
            call: UpstreamCall, upstream: Upstream
        ) -> tuple[list[Json], AsyncIterator[Json] | None]:
            return await _read_until_content(upstream.stream(call), call.timeout)

        route, (head, rest) = await self._run(alias, "chat", body, deadline, attempt)
        return OpenedStream(route, head, rest, self.breakers[route.deployment])

    async def _run(
        self,
        alias: ModelAlias,
        operation: Operation,
        body: Json,
        deadline: float,
        attempt: Callable[[UpstreamCall, Upstream], Awaitable[Any]],
    ) -> tuple[RouteResult, Any]:
        walk = _Walk(self, operation, body, deadline, attempt)
        chain = [alias, *(self._aliases[name] for name in alias.fallbacks)]
        context_fallback_taken = False
        position = 0
        while position < len(chain):
            current = chain[position]
            try:
                answered = await walk.try_alias(current, self._targets[current.alias])
            except ContextWindowExceeded:
                # Put the larger-context alias next in the chain, once per request.
                if current.context_fallback is None or context_fallback_taken:
                    raise
                context_fallback_taken = True
                chain.insert(position + 1, self._aliases[current.context_fallback])
                answered = None
            if answered is not None:
                target, result = answered
                route = RouteResult(
                    alias=current.alias,
                    deployment=target.name,
                    attempts=walk.summaries,
                    fallback_used=current is not alias,
                )
                return route, result
            position += 1
        raise walk.final_error()


class _Walk:
    """One request's way through the chain: its attempts, deadline and summaries."""

    def __init__(
        self,
        router: Router,
        operation: Operation,
        body: Json,
        deadline: float,
        attempt: Callable[[UpstreamCall, Upstream], Awaitable[Any]],
    ) -> None:
        self.router = router
        self.routing = router._routing
        self.clock = router._clock
        self.operation = operation
        self.body = body
        self.deadline = deadline
        self.attempt = attempt
        self.summaries: list[AttemptSummary] = []
        self._prompt_tokens: int | None = None

    async def try_alias(
        self, alias: ModelAlias, targets: list[_Target]
    ) -> tuple[_Target, Any] | None:
        """Up to ``retries + 1`` attempts on one alias; None means: try the next alias."""
        usable = [t for t in targets if self._fits(t)]
        if not usable:
            for t in targets:
                self._skip(alias, t, "context_skipped")
            raise ContextWindowExceeded(
                f'the prompt is longer than every context window of alias "{alias.alias}"',
                upstream_status=400,
            )
        tried: set[str] = set()
        for retry in range(alias.retries + 1):
            chosen = self._choose(alias, usable, tried)
            if chosen is None:
                return None
            target, admission = chosen
            tried.add(target.name)
            call = UpstreamCall(
                operation=self.operation,
                model=target.deployment.model,
                body=self.body,
                timeout=min(alias.timeout_s, self._remaining()),
                idle_timeout=self.routing.stream_idle_timeout_s,
            )
            started = self.clock()
            try:
                result = await self.attempt(call, target.upstream)
            except TimeoutError:
                # Only the router's own bound on a send ends here.
                failure: ProviderError = UpstreamTimeout(f"no answer within {call.timeout:g}s")
            except ProviderError as error:
                failure = error
            except BaseException:
                target.breaker.release(admission)
                raise
            else:
                target.breaker.record_success(admission)
                self._record(alias, target, "ok", 200, started)
                return target, result
            self._record(alias, target, failure.code, failure.upstream_status, started)
            judge(target.breaker, admission, failure)
            if not failure.retryable:
                raise failure
            if self._remaining() <= 0:
                raise self.deadline_error() from failure
            if retry < alias.retries and not await self._backoff(retry, failure, usable, tried):
                return None
        return None

    def _fits(self, target: _Target) -> bool:
        """A cheap pre-check against a configured context window.

        The estimate errs low, so a request that might fit is still tried and
        the upstream's own context error stays the authority.
        """
        window = target.deployment.context_window
        if window is None:
            return True
        if self._prompt_tokens is None:
            wanted = self.body.get("max_completion_tokens") or self.body.get("max_tokens") or 0
            self._prompt_tokens = tokens_for_chars(prompt_chars(self.body)) + int(wanted)
        return self._prompt_tokens <= window

    def _choose(
        self, alias: ModelAlias, usable: list[_Target], tried: set[str]
    ) -> tuple[_Target, Admission] | None:
        """Weighted choice, untried deployments first, claiming a breaker slot."""
        fresh = [t for t in usable if t.name not in tried]
        for group in (fresh, [t for t in usable if t.name in tried]):
            candidates = list(group)
            while candidates:
                pick = self._weighted(candidates)
                admission = pick.breaker.allow()
                if admission is not Admission.REFUSED:
                    return pick, admission
                candidates.remove(pick)
        for t in usable:
            self._skip(alias, t, "breaker_open")
        return None

    def _weighted(self, targets: list[_Target]) -> _Target:
        if len(targets) == 1:
            return targets[0]
        total = sum(t.deployment.weight for t in targets)
        point = self.router._rng.random() * total
        for t in targets:
            point -= t.deployment.weight
            if point < 0:
                return t
        return targets[-1]

    async def _backoff(
        self, retry: int, error: ProviderError, usable: list[_Target], tried: set[str]
    ) -> bool:
        """Wait before the next attempt on this alias; False means: move on now."""
        if any(t.name not in tried and t.breaker.admits() for t in usable):
            return True  # another deployment can take it at once
        if error.retry_after is not None:
            wait = min(error.retry_after, self.routing.max_retry_after_s)
        else:
            # Full jitter: spreads retries of many clients over the whole window.
            ceiling = min(self.routing.backoff_max_s, self.routing.backoff_base_s * 2**retry)
            wait = self.router._rng.uniform(0, ceiling)
        if wait >= self._remaining():
            return False  # waiting would spend the deadline; the fallback may answer now
        if wait > 0:
            await self.router._sleep(wait)
        return True

    def _remaining(self) -> float:
        return self.deadline - self.clock()

    def _record(
        self, alias: ModelAlias, target: _Target, outcome: str, status: int | None, started: float
    ) -> None:
        elapsed = (self.clock() - started) * 1000
        self.summaries.append(
            AttemptSummary(alias.alias, target.name, outcome, status, elapsed, started)
        )

    def _skip(self, alias: ModelAlias, target: _Target, outcome: str) -> None:
        self.summaries.append(
            AttemptSummary(alias.alias, target.name, outcome, None, 0.0, self.clock())
        )

    def deadline_error(self) -> RoutingError:
        return DeadlineExceeded(
            "the request's deadline passed before an upstream answered: "
            + RoutingError.summarize(self.summaries),
            self.summaries,
        )

    def final_error(self) -> RoutingError:
        if self._remaining() <= 0:
            return self.deadline_error()
        made = [s for s in self.summaries if s.outcome not in SKIPPED_OUTCOMES]
        if not made:
            return NoHealthyUpstream(
                "every deployment's circuit breaker is open: "
                + RoutingError.summarize(self.summaries),
                self.summaries,
            )
        return AllUpstreamsFailed(
            f"all {len(made)} upstream attempts failed: " + RoutingError.summarize(self.summaries),
            self.summaries,
        )


def _has_content(chunk: Json) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("upstream sent a malformed stream chunk")
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


def reachable_deployments(alias: ModelAlias, aliases: Mapping[str, ModelAlias]) -> tuple[str, ...]:
    """Every deployment a request for ``alias`` may end up on, in chain order.

    The alias, its ``fallbacks``, and the ``context_fallback`` of any of them:
    a superset of one walk, which takes at most one context fallback. Budget
    reservations price a request at the dearest of these.
    """
    chain = [alias, *(aliases[name] for name in alias.fallbacks)]
    chain += [aliases[a.context_fallback] for a in list(chain) if a.context_fallback]
    return tuple(dict.fromkeys(d.name for a in chain for d in a.deployments))
