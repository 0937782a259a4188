"""Monthly cost projections from an observed mix of requests (pure maths)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from keel.errors import InvalidRequest

SECONDS_PER_MONTH = 30 * 24 * 60 * 60  # a 30-day month, so months compare


@dataclass(frozen=True, slots=True)
class MixEntry:
    """What one model (or deployment) served over an observed window."""

    name: str  # provider model or "provider/model" deployment
    requests: int
    cost_usd: float  # summed over the requests whose cost is known
    unknown_cost_requests: int = 0  # requests with no price (cost None)


@dataclass(frozen=True, slots=True)
class ModelProjection:
    name: str
    share: float  # of all observed requests
    requests_per_month: float
    cost_per_request_usd: float | None  # mean over priced requests; None if none were
    monthly_usd: float  # priced requests only: a floor when unknown_share > 0
    unknown_share: float  # of this model's requests, cost unknown


@dataclass(frozen=True, slots=True)
class Projection:
    """A month at ``qps`` with the observed mix, and how much of it is unpriced."""

    qps: float
    requests_per_month: float
    monthly_usd: float  # priced requests only: a floor when unknown_share > 0
    unknown_share: float  # of all requests, cost unknown
    models: tuple[ModelProjection, ...]  # most expensive first


def project_monthly(mix: Sequence[MixEntry], qps: float) -> Projection:
    """Scale the observed cost per request to ``qps`` for a 30-day month.

    Each model keeps its observed share of requests. Requests with an unknown
    cost are not guessed at: they add nothing to ``monthly_usd`` and are
    reported as ``unknown_share``, so the projection says what it does not
    know. Entries with the same name are merged.
    """
    if not (math.isfinite(qps) and qps > 0):
        raise InvalidRequest(f"qps must be a positive number, not {qps}", param="qps")
    merged = _merge(mix)
    observed = sum(requests for requests, _, _ in merged.values())
    if observed == 0:
        raise InvalidRequest("no requests observed: nothing to project from", param="mix")
    per_month = qps * SECONDS_PER_MONTH
    models = tuple(
        sorted(
            (_model(name, *counts, observed, per_month) for name, counts in merged.items()),
            key=lambda m: (-m.monthly_usd, m.name),
        )
    )
    unknown = sum(u for _, _, u in merged.values())
    return Projection(
        qps=qps,
        requests_per_month=per_month,
        monthly_usd=sum(m.monthly_usd for m in models),
        unknown_share=unknown / observed,
        models=models,
    )


def _merge(mix: Sequence[MixEntry]) -> dict[str, tuple[int, float, int]]:
    merged: dict[str, tuple[int, float, int]] = {}
    for entry in mix:
        if entry.requests < 0 or not 0 <= entry.unknown_cost_requests <= entry.requests:
            raise InvalidRequest(
                f"{entry.name}: need 0 <= unknown_cost_requests <= requests", param="mix"
            )
        if not (math.isfinite(entry.cost_usd) and entry.cost_usd >= 0):
            raise InvalidRequest(f"{entry.name}: cost_usd must be >= 0", param="mix")
        requests, cost, unknown = merged.get(entry.name, (0, 0.0, 0))
        merged[entry.name] = (
            requests + entry.requests,
            cost + entry.cost_usd,
            unknown + entry.unknown_cost_requests,
        )
    return merged


def _model(
    name: str, requests: int, cost: float, unknown: int, observed: int, per_month: float
) -> ModelProjection:
    priced = requests - unknown
    share = requests / observed
    return ModelProjection(
        name=name,
        share=share,
        requests_per_month=per_month * share,
        cost_per_request_usd=cost / priced if priced else None,
        # mean priced cost x projected priced requests == cost / observed x per_month
        monthly_usd=cost / observed * per_month,
        unknown_share=unknown / requests if requests else 0.0,
    )
