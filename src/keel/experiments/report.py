"""Readouts of an experiment: a per-variant summary, and a fixed A/B report with tests.

``summarize`` is what ``keel rollout status`` and the admin API show per
variant. ``ab_report`` is the fixed-horizon readout ``keel experiment
report`` prints: per-variant rates and means with 95 % intervals (Wilson for
rates, Student t for means), and per candidate against control a
two-proportion z-test (error and thumbs-down rates), Welch's t-test
(latency, cost, judge score) and a Bayesian chance to beat control (error
and thumbs-down rates; lower is better). Read a fixed split once, at its
planned size (``keel experiment size``); guards during a ramp use the
sequential tests instead, which stay valid under peeking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from keel.experiments import stats
from keel.experiments.decide import VariantMetrics
from keel.experiments.spec import Experiment

__all__ = ["LEVEL", "ab_report", "summarize"]

LEVEL = 0.95


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(m: VariantMetrics) -> dict[str, Any]:
    """The numbers a status view shows for one variant (None where there is no data)."""
    return {
        "n": m.n,
        "errors": m.errors,
        "error_rate": m.errors / m.n if m.n else None,
        "p95_latency_ms": (
            float(np.quantile(m.latencies_ms, 0.95)) if len(m.latencies_ms) else None
        ),
        "cost_per_request_usd": _mean(m.costs_usd),
        "cost_unknown": m.cost_unknown,
        "rated": m.rated,
        "thumbs_down_rate": m.thumbs_down / m.rated if m.rated else None,
        "guardrail_flag_rate": m.guardrail_flags / m.n if m.n else None,
        "judge_score": _mean(m.judge_scores),
        "judged": len(m.judge_scores),
    }


def _rate(x: int, n: int) -> dict[str, Any]:
    if n <= 0:
        return {"value": None, "lower": None, "upper": None, "n": n}
    lower, upper = stats.proportion_ci(x, n, level=LEVEL)
    return {"value": x / n, "lower": lower, "upper": upper, "n": n}


def _mean_ci(values: Sequence[float]) -> dict[str, Any]:
    if len(values) < 2:
        return {"value": _mean(values), "lower": None, "upper": None, "n": len(values)}
    lower, upper = stats.mean_ci(values, level=LEVEL)
    return {"value": _mean(values), "lower": lower, "upper": upper, "n": len(values)}


def _variant(m: VariantMetrics) -> dict[str, Any]:
    return {
        "n": m.n,
        "error_rate": _rate(m.errors, m.n),
        "thumbs_down_rate": _rate(m.thumbs_down, m.rated),
        "guardrail_flag_rate": _rate(m.guardrail_flags, m.n),
        "latency_ms": _mean_ci(m.latencies_ms),
        "cost_per_request_usd": _mean_ci(m.costs_usd),
        "judge_score": _mean_ci(m.judge_scores),
    }


def _test(run: Callable[[], stats.FixedTest]) -> dict[str, Any] | None:
    """A fixed test's numbers, or None when there is too little data for it."""
    try:
        result = run()
    except ValueError:
        return None
    return {
        "difference": _finite(result.estimate),
        "lower": _finite(result.lower),
        "upper": _finite(result.upper),
        "statistic": _finite(result.statistic),
        "p_value": _finite(result.p_value),
    }


def _proportions(x_a: int, n_a: int, x_b: int, n_b: int) -> dict[str, Any] | None:
    if n_a <= 0 or n_b <= 0:
        return None
    found = _test(lambda: stats.two_proportion_ztest(x_a, n_a, x_b, n_b, level=LEVEL))
    if found is not None:
        found["chance_to_beat_control"] = stats.chance_to_beat(
            x_a, n_a, x_b, n_b, higher_is_better=False
        )
    return found


def _comparison(a: VariantMetrics, b: VariantMetrics) -> dict[str, Any]:
    return {
        "error_rate": _proportions(a.errors, a.n, b.errors, b.n),
        "thumbs_down_rate": _proportions(a.thumbs_down, a.rated, b.thumbs_down, b.rated),
        "latency_ms": _test(lambda: stats.welch_ttest(a.latencies_ms, b.latencies_ms)),
        "cost_per_request_usd": _test(lambda: stats.welch_ttest(a.costs_usd, b.costs_usd)),
        "judge_score": _test(lambda: stats.welch_ttest(a.judge_scores, b.judge_scores)),
    }


def ab_report(spec: Experiment, metrics: Mapping[str, VariantMetrics]) -> dict[str, Any]:
    """Per-variant estimates with intervals, and each candidate's tests against control."""
    control = spec.control.name
    empty = VariantMetrics()
    return {
        "experiment": spec.name,
        "level": LEVEL,
        "control": control,
        "variants": {v.name: _variant(metrics.get(v.name, empty)) for v in spec.variants},
        "comparisons": {
            v.name: _comparison(metrics.get(control, empty), metrics.get(v.name, empty))
            for v in spec.candidates
        },
    }
