"""Guard metrics: their per-variant inputs, what each compares, on which scale.

``VariantMetrics`` is public as ``keel.experiments.decide.VariantMetrics``
(defined here so this module and ``decide`` need not import each other).

| metric              | compared                                     | allowance |
| ------------------- | -------------------------------------------- | --------- |
| error_rate          | errors / n, two proportions                  | absolute  |
| guardrail_flag_rate | guardrail_flags / n, two proportions         | absolute  |
| thumbs_down_rate    | thumbs_down / rated, two proportions         | absolute  |
| judge_score         | mean score (higher is better); in shadow     | absolute  |
|                     | mode the candidate's pairwise preference     |           |
|                     | against 0.5 (a tie)                          |           |
| p95_latency_ms      | exceedance of (1 + allowance) x control p95  | relative  |
| ttft_ms             | geometric mean (mean of log ms)              | relative  |
| cost_per_request    | ratio of arithmetic means (delta method)     | relative  |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keel.experiments import stats
from keel.experiments._sequential import Floats
from keel.experiments.spec import Guard, GuardMetric

HIGHER_IS_BETTER: frozenset[GuardMetric] = frozenset({"judge_score"})
RELATIVE: frozenset[GuardMetric] = frozenset({"p95_latency_ms", "ttft_ms", "cost_per_request"})
_MIN_MS = 1.0  # log scales: a time under 1 ms counts as 1 ms


@dataclass(frozen=True, slots=True)
class VariantMetrics:
    """One variant's traffic in the current step window, as the store aggregates it.

    ``latencies_ms`` and ``ttft_ms`` are per completed request (ttft for
    streamed ones); ``costs_usd`` leaves out requests whose cost is unknown and
    counts them in ``cost_unknown``; ``rated`` requests got feedback, of which
    ``thumbs_down`` were negative; ``judge_scores`` are the online judge's
    scores in [0, 1] on the sampled share. ``units`` is the number of
    distinct assignment units (tenants or end users) seen, if known: the
    sample-ratio check counts units rather than requests when it is given.
    """

    n: int = 0
    errors: int = 0
    latencies_ms: Sequence[float] = ()
    ttft_ms: Sequence[float] = ()
    costs_usd: Sequence[float] = ()
    cost_unknown: int = 0
    rated: int = 0
    thumbs_down: int = 0
    guardrail_flags: int = 0
    judge_scores: Sequence[float] = ()
    units: int | None = None


def allowance(guard: Guard) -> float:
    """The guard's allowance in its worse direction; unset means none (0)."""
    value = guard.max_decrease if guard.metric in HIGHER_IS_BETTER else guard.max_increase
    return value or 0.0


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _ms(values: Sequence[float]) -> Floats:
    return np.maximum(np.asarray(values, dtype=np.float64), _MIN_MS)


def value(metric: GuardMetric, m: VariantMetrics) -> float | None:
    """The variant's value of ``metric``, as its guard compares it (None without data)."""
    if metric == "error_rate":
        return _rate(m.errors, m.n)
    if metric == "guardrail_flag_rate":
        return _rate(m.guardrail_flags, m.n)
    if metric == "thumbs_down_rate":
        return _rate(m.thumbs_down, m.rated)
    if metric == "p95_latency_ms":
        return float(np.quantile(m.latencies_ms, 0.95)) if len(m.latencies_ms) else None
    if metric == "ttft_ms":
        return float(np.exp(np.mean(np.log(_ms(m.ttft_ms))))) if len(m.ttft_ms) else None
    if metric == "cost_per_request":
        return float(np.mean(m.costs_usd)) if len(m.costs_usd) else None
    return float(np.mean(m.judge_scores)) if len(m.judge_scores) else None


def scale(metric: GuardMetric) -> str:
    """How the guard's test reads: absolute or relative allowance, or p95 exceedance shares."""
    if metric == "p95_latency_ms":
        return "exceedance"
    return "relative" if metric in RELATIVE else "absolute"


def exceedance(
    control: VariantMetrics, candidate: VariantMetrics, margin: float
) -> tuple[float, float, float]:
    """For the p95 guard's audit: (1 + margin) x control's p95, control's share over its p95,
    and the candidate's share over the threshold — what ``stats.sequential_quantile`` compares.
    """
    a = np.asarray(control.latencies_ms, dtype=np.float64)
    b = np.asarray(candidate.latencies_ms, dtype=np.float64)
    p95 = float(np.quantile(a, 0.95))
    threshold = (1 + margin) * p95
    return threshold, float(np.mean(a > p95)), float(np.mean(b > threshold))


def compare(
    guard: Guard,
    control: VariantMetrics,
    candidate: VariantMetrics,
    alpha: float,
    n_tune: int,
    *,
    pairwise: bool = False,
) -> stats.Sequential:
    """The always-valid test of "candidate worse than control by more than the allowance".

    ``pairwise``: the candidate's judge scores are pairwise preferences over
    control's answer to the same request (shadow mode), tested against 0.5.
    """
    margin = allowance(guard)
    c, k = control, candidate
    metric = guard.metric
    if metric in ("error_rate", "guardrail_flag_rate", "thumbs_down_rate"):
        counts = {
            "error_rate": ((c.errors, c.n), (k.errors, k.n)),
            "guardrail_flag_rate": ((c.guardrail_flags, c.n), (k.guardrail_flags, k.n)),
            "thumbs_down_rate": ((c.thumbs_down, c.rated), (k.thumbs_down, k.rated)),
        }[metric]
        (x_a, n_a), (x_b, n_b) = counts
        return stats.sequential_proportions(
            x_a, n_a, x_b, n_b, margin=margin, alpha=alpha, n_tune=n_tune
        )
    if metric == "p95_latency_ms":
        return stats.sequential_quantile(
            c.latencies_ms, k.latencies_ms, q=0.95, margin=margin, alpha=alpha, n_tune=n_tune
        )
    if metric == "ttft_ms":
        return stats.sequential_means(
            _ms(c.ttft_ms),
            _ms(k.ttft_ms),
            margin=margin,
            scale="geometric",
            alpha=alpha,
            n_tune=n_tune,
        )
    if metric == "cost_per_request":
        return stats.sequential_means(
            c.costs_usd, k.costs_usd, margin=margin, scale="ratio", alpha=alpha, n_tune=n_tune
        )
    if pairwise:
        return stats.sequential_mean_vs(
            k.judge_scores,
            0.5,
            margin=margin,
            alpha=alpha,
            higher_is_worse=False,
            n_tune=n_tune,
        )
    return stats.sequential_means(
        c.judge_scores,
        k.judge_scores,
        margin=margin,
        alpha=alpha,
        higher_is_worse=False,
        n_tune=n_tune,
    )
