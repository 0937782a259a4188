"""Experiments on the request path: which variant a request gets, and shadow copies.

Each replica keeps the running experiments in memory and re-reads them every
``refresh_s`` (1 s), so a step, a pause or a rollback decided anywhere
reaches it within seconds. Assignment is a sticky hash of the experiment's
seed and the unit (tenant, end user or request), identical on every replica:
a unit keeps its variant while the shares only grow.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.experiments.assign import assign, bucket, eligible, unit_id
from keel.experiments.spec import Experiment, Guard, Shadow, Variant
from keel.pipeline.context import RequestContext

if TYPE_CHECKING:
    from keel.store import ExperimentStore

log = logging.getLogger("keel.experiments")

# Bucket space of assign.bucket: shares are percent, so one bucket is 0.01 %.
_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Live:
    """A running experiment as this replica applies it."""

    spec: Experiment
    shares: dict[str, float]  # percent per variant name, what assignment uses now


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment: str
    variant: Variant
    shadow: Shadow | None = None  # set on a copy to mirror: how


class ExperimentCatalog:
    def __init__(self, store: ExperimentStore, *, refresh_s: float = 1.0) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._by_prompt: dict[str, Live] = {}
        self._by_alias: dict[str, Live] = {}

    async def refresh(self) -> None:
        running = await asyncio.to_thread(self._store.active)
        by_prompt: dict[str, Live] = {}
        by_alias: dict[str, Live] = {}
        for record in running:
            live = Live(record.spec, dict(record.shares))
            if record.spec.prompt is not None:
                by_prompt[record.spec.prompt] = live
            elif record.spec.alias is not None:
                by_alias[record.spec.alias] = live
        self._by_prompt, self._by_alias = by_prompt, by_alias

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep the last view; the store may be back next tick
                log.warning("reading experiments failed: %s", exc)

    def find(self, ctx: RequestContext) -> Live | None:
        ref = ctx.prompt_ref
        if ref is not None:
            # A request pinned to an exact version has chosen; only labels take part.
            return None if ref.version is not None else self._by_prompt.get(ref.name)
        model = ctx.body.get("model")
        return self._by_alias.get(model) if isinstance(model, str) else None


class AssignVariant:
    """Gives the request its variant: a prompt version, an alias, or both."""

    name = "experiment"

    def __init__(self, catalog: ExperimentCatalog, tier_name: Any) -> None:
        self._catalog = catalog
        self._tier_name = tier_name  # key -> its tier's name, for cohort rules

    async def __call__(self, ctx: RequestContext) -> None:
        live = self._catalog.find(ctx)
        if live is None or ctx.key is None:
            return
        spec = live.spec
        if not eligible(spec, ctx.key.tenant, self._tier_name(ctx.key)):
            return
        unit = unit_id(spec, ctx.key.tenant, ctx.end_user, ctx.request_id)
        if unit is None:
            return
        variant = assign(spec, live.shares, unit)
        ctx.assignment = Assignment(spec.name, variant)
        apply_variant(ctx, variant)
        if spec.shadow is not None and _picked(spec, "shadow", ctx.request_id, spec.shadow.share):
            ctx.mirror = Assignment(spec.name, spec.candidates[0], spec.shadow)
        guard = judge_guard(spec.guards)
        if guard is not None and _picked(spec, "judge", ctx.request_id, guard.judge_sample):
            ctx.judge = guard


def _picked(spec: Experiment, purpose: str, request_id: str, share: float) -> bool:
    """A sticky draw per request, independent of the variant's own bucket."""
    return bucket(f"{spec.hash_seed}:{purpose}", request_id) < share * _BUCKETS


def judge_guard(guards: list[Guard]) -> Guard | None:
    """The experiment's judge_score guard, when it names a judge alias."""
    return next((g for g in guards if g.metric == "judge_score" and g.judge_alias), None)


def apply_variant(ctx: RequestContext, variant: Variant) -> None:
    """Point the request at the variant's prompt version and/or alias."""
    if variant.prompt_version is not None and ctx.prompt_ref is not None:
        ctx.prompt_ref = ctx.prompt_ref.model_copy(
            update={"version": variant.prompt_version, "label": None}
        )
    if variant.alias is not None:
        ctx.variant_alias = variant.alias
        if ctx.prompt_ref is None:
            ctx.body = {**ctx.body, "model": variant.alias}
            ctx.upstream_body = {**ctx.upstream_body, "model": variant.alias}
