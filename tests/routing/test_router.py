"""Router behaviour against scripted upstreams (test doubles of the Upstream seam)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keel.config import KeelConfig, parse_config
from keel.errors import (
    AllUpstreamsFailed,
    ContextWindowExceeded,
    DeadlineExceeded,
    NoHealthyUpstream,
    ProviderError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from keel.providers.base import Json, UpstreamCall
from keel.routing import Admission, Router

Outcome = ProviderError | str


class Scripted:
    """Answers each call with the next scripted outcome for its model."""

    def __init__(self, script: dict[str, list[Outcome]]) -> None:
        self.script = script
        self.calls: list[UpstreamCall] = []

    def _next(self, call: UpstreamCall) -> str:
        self.calls.append(call)
        outcomes = self.script.get(call.model) or ["ok"]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    async def send(self, call: UpstreamCall) -> Json:
        return {"answer": self._next(call), "model": call.model}

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Json]:
        text = self._next(call)
        yield {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
        yield {"choices": [{"index": 0, "delta": {"content": text}}]}

    async def aclose(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make(
    models: list[dict[str, Any]], script: dict[str, list[Outcome]], **routing: Any
) -> tuple[Router, Scripted, Clock, KeelConfig]:
    config = parse_config(
        {"providers": {"p": {"kind": "simulator"}}, "models": models, "routing": routing}
    )
    upstream = Scripted(script)
    clock = Clock()
    router = Router(config, {"p": upstream}, rng=random.Random(7), sleep=clock.sleep, clock=clock)
    return router, upstream, clock, config


def alias(name: str, *models: str, **extra: Any) -> dict[str, Any]:
    return {"alias": name, "deployments": [{"provider": "p", "model": m} for m in models], **extra}


BODY: Json = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


async def send(router: Router, config: KeelConfig, name: str = "a") -> Any:
    target = router.alias(name)
    assert target is not None
    return await router.send(target, "chat", BODY, deadline=router.deadline_for(target))


async def test_retries_retryable_failures_then_succeeds() -> None:
    router, _upstream, clock, config = make(
        [alias("a", "m1", retries=2)], {"m1": [UpstreamUnavailable("boom"), "ok"]}
    )
    result = await send(router, config)
    assert result.response["answer"] == "ok"
    assert [a.outcome for a in result.attempts] == ["upstream_unavailable", "ok"]
    assert len(clock.slept) == 1  # backed off before retrying the same deployment


async def test_never_retries_a_rejected_request() -> None:
    router, upstream, _, config = make(
        [alias("a", "m1", retries=3, fallbacks=["b"]), alias("b", "m2")],
        {"m1": [UpstreamRejected("bad param", upstream_status=400)]},
    )
    with pytest.raises(UpstreamRejected):
        await send(router, config)
    assert len(upstream.calls) == 1


async def test_retry_after_is_honoured_and_capped() -> None:
    router, _, clock, config = make(
        [alias("a", "m1", retries=1)],
        {"m1": [UpstreamRateLimited("slow down", retry_after=3.0), "ok"]},
        max_retry_after_s=2.0,
    )
    await send(router, config)
    assert clock.slept == [2.0]


async def test_falls_back_across_aliases_when_retries_run_out() -> None:
    router, _, _, config = make(
        [alias("a", "m1", retries=1, fallbacks=["b"]), alias("b", "m2")],
        {"m1": [UpstreamUnavailable("down")]},
    )
    result = await send(router, config)
    assert result.alias == "b" and result.fallback_used
    assert [a.deployment for a in result.attempts] == ["p/m1", "p/m1", "p/m2"]


async def test_moves_to_an_untried_deployment_without_waiting() -> None:
    router, _, clock, config = make(
        [alias("a", "m1", "m2", retries=1)], {"m1": [UpstreamUnavailable("down")]}
    )
    # Whichever is picked first, the retry goes to the other one at once.
    for _ in range(5):
        result = await send(router, config)
        assert result.attempts[-1].outcome == "ok"
    assert clock.slept == []


async def test_context_window_error_goes_to_the_context_fallback() -> None:
    router, _, _, config = make(
        [
            alias("a", "m1", context_fallback="big", fallbacks=["b"]),
            alias("b", "m2"),
            alias("big", "m3"),
        ],
        {"m1": [ContextWindowExceeded("too long", upstream_status=400)]},
    )
    result = await send(router, config)
    assert result.alias == "big"


async def test_context_precheck_skips_a_small_deployment() -> None:
    models = [
        {
            "alias": "a",
            "deployments": [{"provider": "p", "model": "m1", "context_window": 10}],
            "context_fallback": "big",
        },
        alias("big", "m3"),
    ]
    router, upstream, _, _config = make(models, {})
    long_body = {"model": "a", "messages": [{"role": "user", "content": "x" * 400}]}
    target = router.alias("a")
    assert target is not None
    result = await router.send(target, "chat", long_body, deadline=router.deadline_for(target))
    assert result.alias == "big"
    assert [c.model for c in upstream.calls] == ["m3"]


async def test_all_failed_is_502_with_a_summary() -> None:
    router, _, _, config = make(
        [alias("a", "m1", retries=1, fallbacks=["b"]), alias("b", "m2", retries=0)],
        {"m1": [UpstreamUnavailable("down", upstream_status=503)], "m2": [UpstreamTimeout("slow")]},
    )
    with pytest.raises(AllUpstreamsFailed) as caught:
        await send(router, config)
    error = caught.value
    assert error.status == 502
    assert len(error.attempts) == 3
    assert "p/m1 (a): upstream_unavailable 503" in error.message
    assert error.body()["error"]["attempts"][2]["deployment"] == "p/m2"


async def test_open_breakers_give_503_without_calling() -> None:
    router, upstream, _, config = make(
        [alias("a", "m1", retries=0)],
        {"m1": [UpstreamUnavailable("down")]},
        breaker={"min_requests": 2, "failure_rate": 0.5, "cooldown_s": 30},
    )
    for _ in range(2):
        with pytest.raises(AllUpstreamsFailed):
            await send(router, config)
    calls = len(upstream.calls)
    with pytest.raises(NoHealthyUpstream) as caught:
        await send(router, config)
    assert caught.value.status == 503
    assert len(upstream.calls) == calls


async def test_breaker_recovers_through_a_probe() -> None:
    router, _upstream, clock, config = make(
        [alias("a", "m1", retries=0)],
        {"m1": [UpstreamUnavailable("down"), UpstreamUnavailable("down"), "ok"]},
        breaker={"min_requests": 2, "failure_rate": 0.5, "cooldown_s": 30},
    )
    for _ in range(2):
        with pytest.raises(AllUpstreamsFailed):
            await send(router, config)
    clock.now += 30
    result = await send(router, config)
    assert result.response["answer"] == "ok"
    assert router.breakers["p/m1"].state.value == "closed"


async def test_deadline_passed_is_504() -> None:
    router, upstream, clock, config = make(
        [alias("a", "m1", retries=5, timeout_s=0.4, deadline_s=1.0)], {}
    )

    async def hang(call: UpstreamCall) -> Json:
        clock.now += call.timeout  # the upstream never answers within the attempt
        raise UpstreamTimeout("slow")

    upstream.send = hang  # type: ignore[method-assign]
    with pytest.raises(DeadlineExceeded) as caught:
        await send(router, config)
    assert caught.value.status == 504


async def test_a_wait_that_would_spend_the_deadline_moves_to_the_fallback_now() -> None:
    router, _, clock, config = make(
        [alias("a", "m1", retries=3, deadline_s=5.0, fallbacks=["b"]), alias("b", "m2")],
        {"m1": [UpstreamRateLimited("wait", retry_after=30.0)]},
        max_retry_after_s=30.0,
    )
    result = await send(router, config)
    assert result.alias == "b"
    assert clock.slept == []


async def test_rate_limit_on_one_deployment_tries_the_other_at_once() -> None:
    router, _, clock, config = make(
        [alias("a", "m1", "m2", retries=1)],
        {
            "m1": [UpstreamRateLimited("wait", retry_after=8.0)],
            "m2": [UpstreamRateLimited("wait", retry_after=8.0)],
        },
    )
    # Whichever goes first is rate limited; the retry goes to the other with no wait.
    with pytest.raises(AllUpstreamsFailed):
        await send(router, config)
    assert clock.slept == []


async def test_an_open_breaker_on_the_untried_deployment_does_not_end_the_alias() -> None:
    models = [alias("a", "m1", "m2", retries=2)]
    router, _upstream, _, config = make(
        models,
        {"m1": [UpstreamUnavailable("blip"), "ok"]},
        breaker={"min_requests": 2, "failure_rate": 0.5, "cooldown_s": 60},
    )
    # Open m2's breaker; m1 fails once, then must be retried rather than giving up.
    for _ in range(2):
        router.breakers["p/m2"].record_failure(Admission.CALL)
    result = await send(router, config)
    assert result.deployment == "p/m1"
    assert [a.outcome for a in result.attempts] == ["upstream_unavailable", "ok"]


async def test_a_context_skip_is_not_an_attempt() -> None:
    models = [
        {
            "alias": "a",
            "deployments": [{"provider": "p", "model": "m1", "context_window": 10}],
            "context_fallback": "big",
        },
        alias("big", "m3"),
    ]
    router, _, _, _ = make(models, {})
    target = router.alias("a")
    assert target is not None
    long_body = {"model": "a", "messages": [{"role": "user", "content": "x" * 400}]}
    result = await router.send(target, "chat", long_body, deadline=router.deadline_for(target))
    assert result.attempt_count == 1


async def test_a_stream_rejected_mid_way_does_not_count_against_the_breaker() -> None:
    router, upstream, _, _config = make(
        [alias("a", "m1")], {}, breaker={"min_requests": 1, "failure_rate": 0.5}
    )

    async def rejecting(call: UpstreamCall) -> AsyncIterator[Json]:
        yield {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
        raise UpstreamRejected("bad tool schema", upstream_status=400)

    upstream.stream = rejecting  # type: ignore[method-assign]
    target = router.alias("a")
    assert target is not None
    opened = await router.open_stream(target, BODY, deadline=router.deadline_for(target))
    with pytest.raises(UpstreamRejected):
        async for _ in opened.chunks():
            pass
    assert router.breakers["p/m1"].state.value == "closed"


async def test_a_malformed_chunk_before_content_is_retried_as_a_protocol_error() -> None:
    router, upstream, _, _config = make(
        [alias("a", "m1", retries=0, fallbacks=["b"]), alias("b", "m2")], {}
    )
    real_stream = upstream.stream

    async def broken_first(call: UpstreamCall) -> AsyncIterator[Json]:
        if call.model == "m1":
            yield {"choices": [None]}
            return
        async for chunk in real_stream(call):
            yield chunk

    upstream.stream = broken_first  # type: ignore[method-assign]
    target = router.alias("a")
    assert target is not None
    opened = await router.open_stream(target, BODY, deadline=router.deadline_for(target))
    assert opened.route.deployment == "p/m2"
    assert opened.route.attempts[0].outcome == "upstream_protocol_error"


async def test_weighted_choice_follows_weights() -> None:
    models = [
        {
            "alias": "a",
            "deployments": [
                {"provider": "p", "model": "heavy", "weight": 9},
                {"provider": "p", "model": "light", "weight": 1},
            ],
        }
    ]
    router, upstream, _, config = make(models, {})
    for _ in range(1000):
        await send(router, config)
    heavy = sum(1 for c in upstream.calls if c.model == "heavy")
    assert 850 <= heavy <= 950


async def test_stream_failure_before_content_is_retried() -> None:
    router, _, _, _config = make(
        [alias("a", "m1", retries=0, fallbacks=["b"]), alias("b", "m2")],
        {"m1": [UpstreamUnavailable("down")]},
    )
    target = router.alias("a")
    assert target is not None
    opened = await router.open_stream(target, BODY, deadline=router.deadline_for(target))
    chunks = [c async for c in opened.chunks()]
    assert opened.route.deployment == "p/m2"
    assert chunks[-1]["choices"][0]["delta"]["content"] == "ok"
