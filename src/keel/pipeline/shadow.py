"""Shadow traffic: the candidate answers a copy of the request, after the user has theirs.

A mirrored copy is queued only once the control's answer is complete, so the
user never waits for it; each experiment has a bounded queue, and a copy
that finds it full is dropped and counted rather than queued without end.
Copies run through the same stages as traffic (render, model, route), are
recorded as ``shadow`` requests of the candidate variant, and — by default —
are not charged to the tenant's limits or budget. When both answers are in,
they are compared: a text similarity always, and a pairwise preference when
the experiment names a judge alias; the results go into the shadow request's
record, where the experiment's analysis reads them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from keel.errors import KeelError, http_status
from keel.pipeline._lanes import Lane
from keel.pipeline.context import RequestContext
from keel.pipeline.experimenting import Assignment, apply_variant
from keel.pipeline.schema import PromptRef, upstream_fields
from keel.telemetry.context import new_span_id

if TYPE_CHECKING:
    from keel.pipeline.emit import Emitter
    from keel.pipeline.stages import Pipeline
    from keel.routing import Router

log = logging.getLogger("keel.shadow")

_JUDGE_PROMPT = (
    "Two assistants answered the same request. Which answer is better for the user?"
    ' Reply with JSON only: {"better": "A" | "B" | "tie"}.'
)


@dataclass(frozen=True, slots=True)
class Job:
    original: RequestContext
    mirror: Assignment
    control_answer: str | None


@dataclass(slots=True)
class ShadowStats:
    queued: int = 0
    dropped: int = 0  # the experiment's queue was full
    done: int = 0


class ShadowRunner:
    def __init__(self, pipeline: Pipeline, emitter: Emitter, router: Router) -> None:
        self._pipeline = pipeline
        self._emitter = emitter
        self._router = router
        self._lanes: dict[str, Lane[Job]] = {}
        self.stats = ShadowStats()

    def submit(self, ctx: RequestContext, control_answer: str | None) -> bool:
        """Queue a copy of ``ctx`` for its experiment's candidate; False when dropped."""
        mirror = ctx.mirror
        if mirror is None or mirror.shadow is None:
            return False
        if not self._lane(mirror).offer(Job(ctx, mirror, control_answer)):
            self.stats.dropped += 1
            return False
        self.stats.queued += 1
        return True

    async def drain(self) -> None:
        """Finish what is queued (shutdown), then stop the workers."""
        for lane in self._lanes.values():
            await lane.drain()

    def _lane(self, mirror: Assignment) -> Lane[Job]:
        lane = self._lanes.get(mirror.experiment)
        if lane is None:
            assert mirror.shadow is not None
            lane = Lane(self._run, size=mirror.shadow.queue_size, workers=mirror.shadow.concurrency)
            self._lanes[mirror.experiment] = lane
        return lane

    async def _run(self, job: Job) -> None:
        original = job.original
        ctx = RequestContext(
            request_id=f"{original.request_id}:shadow",
            operation=original.operation,
            raw_body=original.raw_body,
            authorization=None,
            trace_id=original.trace_id,
            parent_span_id=original.span_id,
            span_id=new_span_id(),
        )
        body: dict[str, Any] = orjson.loads(original.raw_body)
        body["stream"] = False  # nobody reads the copy as it streams
        body.pop("stream_options", None)
        ctx.body = body
        ctx.upstream_body = upstream_fields(body)
        ctx.key, ctx.tier = original.key, original.tier
        ctx.end_user, ctx.metadata = original.end_user, dict(original.metadata)
        if original.prompt_ref is not None:
            ctx.prompt_ref = PromptRef.model_validate(body["prompt"])
        ctx.assignment = Assignment(job.mirror.experiment, job.mirror.variant)
        ctx.shadow = True
        apply_variant(ctx, job.mirror.variant)
        error: KeelError | None = None
        try:
            await self._pipeline.run(ctx)
        except KeelError as exc:
            error = exc
        if error is None and ctx.route is not None:
            ctx.extra = await self._compare(job, ctx)
        self._emitter.finish(ctx, http_status(error) if error else 200, error)
        self.stats.done += 1

    async def _compare(self, job: Job, ctx: RequestContext) -> dict[str, Any]:
        assert ctx.route is not None
        candidate = _text(ctx.route.response)
        control = job.control_answer or ""
        from rapidfuzz import fuzz  # only experiments with shadow traffic load it

        found: dict[str, Any] = {
            "shadow_of": job.original.request_id,
            "similarity": round(fuzz.ratio(control, candidate) / 100, 4),
        }
        shadow = job.mirror.shadow
        if shadow is not None and shadow.judge_alias is not None:
            preference = await self._prefer(shadow.judge_alias, control, candidate)
            if preference is not None:
                found["judge"] = preference  # 1 candidate better, 0.5 tie, 0 control better
        return found

    async def _prefer(self, alias_name: str, control: str, candidate: str) -> float | None:
        alias = self._router.alias(alias_name)
        if alias is None:
            return None
        # Half the comparisons show the candidate first, so the judge's position bias cancels.
        flipped = int(time.monotonic() * 1000) % 2 == 1
        first, second = (candidate, control) if flipped else (control, candidate)
        body = {
            "model": alias_name,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": _JUDGE_PROMPT},
                {"role": "user", "content": f"Answer A:\n{first}\n\nAnswer B:\n{second}"},
            ],
        }
        try:
            route = await self._router.send(
                alias, "chat", body, deadline=self._router.deadline_for(alias, time.monotonic())
            )
        except KeelError as exc:
            log.warning("shadow judge failed: %s", exc.code)
            return None
        verdict = _text(route.response)
        better = _better(verdict)
        if better is None:
            return None
        if better == "tie":
            return 0.5
        candidate_won = (better == "A") == flipped
        return 1.0 if candidate_won else 0.0


def _text(response: Any) -> str:
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _better(verdict: str) -> str | None:
    try:
        parsed = orjson.loads(verdict)
    except orjson.JSONDecodeError:
        return None
    value = parsed.get("better") if isinstance(parsed, dict) else None
    return value if value in ("A", "B", "tie") else None
