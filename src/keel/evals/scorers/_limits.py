"""Ceilings on what an answer cost: latency and cost. Value 1 (within) or 0 (over)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from keel.evals.base import Score, Scorer, ScoringCase
from keel.evals.scorers._base import ScorerOptions, parse_options
from keel.evals.scorers._registry import register


class LatencyOptions(ScorerOptions):
    max_ms: float = Field(gt=0)


class LatencyScorer:
    """Passes when the call took at most ``max_ms`` (as the gateway measured it)."""

    def __init__(self, opts: LatencyOptions) -> None:
        self.name = opts.name or "latency"
        self.max_ms = opts.max_ms

    async def score(self, case: ScoringCase) -> Score:
        took = case.output.latency_ms
        if took <= self.max_ms:
            return Score(1.0, True)
        return Score(0.0, False, f"{took:.0f} ms > {self.max_ms:g} ms")


@register("latency")
def latency(options: Mapping[str, Any]) -> Scorer:
    return LatencyScorer(parse_options(LatencyOptions, options))


class CostOptions(ScorerOptions):
    max_usd: float = Field(ge=0)


class CostScorer:
    """Passes when the call cost at most ``max_usd``; an unknown cost fails, never passes."""

    def __init__(self, opts: CostOptions) -> None:
        self.name = opts.name or "cost"
        self.max_usd = opts.max_usd

    async def score(self, case: ScoringCase) -> Score:
        cost = case.output.cost_usd
        if cost is None:
            return Score(0.0, False, "unknown cost")
        if cost <= self.max_usd:
            return Score(1.0, True)
        return Score(0.0, False, f"${cost:.6f} > ${self.max_usd:g}")


@register("cost")
def cost(options: Mapping[str, Any]) -> Scorer:
    return CostScorer(parse_options(CostOptions, options))
