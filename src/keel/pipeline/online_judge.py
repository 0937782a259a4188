"""The online judge: a sampled share of an experiment's requests, scored after the answer.

For experiments with a ``judge_score`` guard, a request picked by a sticky
hash of its id (``judge_sample`` of them) is recorded only once the judge has
rated its answer; the score goes into the request's record (``judge``), which
the experiment's analysis reads per variant. The judge is an alias called
through the router, with the evals judge and its persistent cache, so an
answer seen before costs no second call. The queue is bounded: when full, the
request is recorded unjudged and the drop is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.evals.base import CallResult
from keel.pipeline._lanes import Lane
from keel.pipeline.context import RequestContext
from keel.pipeline.emit import answer_text

if TYPE_CHECKING:
    from keel.evals.judge import Judge
    from keel.pipeline.emit import Emitter
    from keel.routing import Router
    from keel.store import JudgeCache

log = logging.getLogger("keel.experiments")

QUEUE_SIZE = 1000
WORKERS = 2


@dataclass(slots=True)
class JudgeStats:
    judged: int = 0
    dropped: int = 0  # the queue was full: recorded without a score
    failed: int = 0  # the judge gave no usable verdict


@dataclass(frozen=True, slots=True)
class _Job:
    ctx: RequestContext
    status: int


class RouterClient:
    """The evals ``GatewayClient`` seam over this process's own router."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def chat(self, body: Mapping[str, Any]) -> CallResult:
        model = str(body.get("model"))
        alias = self._router.alias(model)
        if alias is None:
            raise LookupError(f'judge alias "{model}" is not configured')
        started = time.monotonic()
        route = await self._router.send(
            alias, "chat", dict(body), deadline=self._router.deadline_for(alias, started)
        )
        usage = route.response.get("usage") or {}
        choices = route.response.get("choices") or [{}]
        content = (choices[0].get("message") or {}).get("content") or ""
        return CallResult(
            text=content if isinstance(content, str) else "",
            response=route.response,
            latency_ms=(time.monotonic() - started) * 1000,
            cost_usd=None,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        )

    async def embed(self, alias: str, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError("the online judge does not embed")


class OnlineJudge:
    def __init__(self, router: Router, emitter: Emitter, cache: JudgeCache | None) -> None:
        self._client = RouterClient(router)
        self._emitter = emitter
        self._cache = cache
        self._judges: dict[str, Judge] = {}
        self._lane: Lane[_Job] | None = None
        self.stats = JudgeStats()

    def submit(self, ctx: RequestContext, status: int) -> None:
        """Judge ``ctx``'s answer, then record the request; record it at once if full."""
        if self._lane is None:
            self._lane = Lane(self._run, size=QUEUE_SIZE, workers=WORKERS)
        if not self._lane.offer(_Job(ctx, status)):
            self.stats.dropped += 1
            self._emitter.finish(ctx, status, None)

    async def drain(self) -> None:
        if self._lane is not None:
            await self._lane.drain()

    async def _run(self, job: _Job) -> None:
        ctx = job.ctx
        try:
            score = await self._score(ctx)
        except Exception as exc:  # the request is recorded either way
            log.warning("online judge failed for %s: %s", ctx.request_id, exc)
            score = None
        if score is None:
            self.stats.failed += 1
        else:
            ctx.extra = {**ctx.extra, "judge": score}
            self.stats.judged += 1
        self._emitter.finish(ctx, job.status, None)

    async def _score(self, ctx: RequestContext) -> float | None:
        guard = ctx.judge
        if guard is None or guard.judge_alias is None:
            return None
        from keel.evals.judge import Judge, Rubric

        judge = self._judges.get(guard.judge_alias)
        if judge is None:
            judge = self._judges[guard.judge_alias] = Judge(
                self._client, guard.judge_alias, self._cache
            )
        request = _last_user_text(ctx.body)
        criteria = f"{guard.judge_criteria}\n\nThe user's request was:\n{request}"
        verdict = await judge.rate(answer_text(ctx) or "", Rubric(criteria=criteria))
        return verdict.score


def _last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return ""
