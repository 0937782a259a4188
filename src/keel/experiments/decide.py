"""The controller's verdict at one analysis interval: advance, hold, roll back or complete.

Pure: it reads the experiment, where the ramp is, the clock and the current
step window's metrics per variant, and returns a ``Decision`` whose
``numbers`` are what the audited event shows. Rules, in order:

1. Sample-ratio mismatch (chi-square p < ``srm_p``): roll back — the split
   itself is broken, so no other number can be trusted.
2. Any guard failing (the always-valid test says the candidate is worse than
   control by more than its allowance): roll back. Rollbacks win over holds.
3. A fixed split or shadow experiment never advances: hold.
4. A ramp step advances once its hold time has passed and every variant
   with traffic at this step has ``min_samples``; at the last step that
   completes the ramp. Otherwise hold, saying what it waits for.

``alpha`` is the experiment's whole false-rollback budget: each guard test
gets alpha / (guards x candidates x analysed steps) (Bonferroni), so the
chance that an equal candidate is ever rolled back by a guard over the whole
ramp, however often it is analysed, stays at most alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from keel.experiments import _guards, stats
from keel.experiments._guards import VariantMetrics
from keel.experiments.assign import shares_at
from keel.experiments.spec import Experiment, Guard, Ramp

__all__ = ["Action", "Decision", "VariantMetrics", "decide"]

Action = Literal["advance", "hold", "rollback", "complete"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now, why (one sentence per reason), and the numbers behind it (JSON-safe)."""

    action: Action
    reasons: tuple[str, ...]
    numbers: dict[str, Any] = field(default_factory=dict)


def _num(value: float | None) -> float | None:
    """A JSON-safe number: None for missing or non-finite values."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _summary(m: VariantMetrics) -> dict[str, Any]:
    lat = np.asarray(m.latencies_ms, dtype=np.float64)
    return {
        "n": m.n,
        "units": m.units,
        "errors": m.errors,
        "error_rate": _num(_guards.value("error_rate", m)),
        "p50_latency_ms": _num(float(np.quantile(lat, 0.5))) if lat.size else None,
        "p95_latency_ms": _num(_guards.value("p95_latency_ms", m)),
        "ttft_ms": _num(_guards.value("ttft_ms", m)),
        "cost_per_request": _num(_guards.value("cost_per_request", m)),
        "cost_unknown": m.cost_unknown,
        "rated": m.rated,
        "thumbs_down_rate": _num(_guards.value("thumbs_down_rate", m)),
        "guardrail_flag_rate": _num(_guards.value("guardrail_flag_rate", m)),
        "judged": len(m.judge_scores),
        "judge_score": _num(_guards.value("judge_score", m)),
    }


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _srm(
    experiment: Experiment, shares: Mapping[str, float], metrics: Mapping[str, VariantMetrics]
) -> tuple[dict[str, Any], str | None]:
    by_units = experiment.unit != "request" and all(
        metrics[name].units is not None for name in shares
    )
    observed = {
        name: (metrics[name].units or 0) if by_units else metrics[name].n for name in shares
    }
    result = stats.srm(observed, shares)
    numbers = {
        "counted": "units" if by_units else "requests",
        "observed": observed,
        "expected": {name: _num(e) for name, e in result.expected.items()},
        "chi2": _num(result.chi2),
        "df": result.df,
        "p_value": _num(result.p_value),
        "threshold": experiment.srm_p,
    }
    if result.p_value >= experiment.srm_p:
        return numbers, None
    seen = ", ".join(f"{name} {count}" for name, count in observed.items())
    wanted = ", ".join(f"{name} {e:.1f}" for name, e in result.expected.items())
    reason = (
        f"sample-ratio mismatch: the split itself is broken (chi-square p={result.p_value:.2g}"
        f" < {experiment.srm_p:g}; observed {seen}; expected {wanted})"
    )
    return numbers, reason


def _analysed_steps(experiment: Experiment) -> int:
    if experiment.ramp is None:
        return 1
    return max(1, sum(1 for share in experiment.ramp.steps if share < 100))


def _guard_row(
    guard: Guard,
    candidate: str,
    control: VariantMetrics,
    cand: VariantMetrics,
    result: stats.Sequential,
) -> dict[str, Any]:
    metric = guard.metric
    row: dict[str, Any] = {
        "metric": metric,
        "candidate": candidate,
        "allowance": _guards.allowance(guard),
        "scale": _guards.scale(metric),
        "control_value": _num(_guards.value(metric, control)),
        "candidate_value": _num(_guards.value(metric, cand)),
        "estimate": _num(result.estimate),
        "lower": _num(result.lower),
        "upper": _num(result.upper),
        "worse_by": _num(result.worse_by),
        "p_value": _num(result.p_value),
        "n_control": result.n_control,
        "n_candidate": result.n_candidate,
        "status": "failed"
        if result.worse
        else ("inconclusive" if result.estimate is None else "ok"),
    }
    if metric == "p95_latency_ms" and result.estimate is not None:
        threshold, share_control, share_candidate = _guards.exceedance(
            control, cand, row["allowance"]
        )
        row.update(
            threshold_ms=_num(threshold),
            control_share_over_p95=_num(share_control),
            candidate_share_over_threshold=_num(share_candidate),
        )
    return row


def _failure(row: dict[str, Any], control: str, alpha: float) -> str:
    metric, candidate = row["metric"], row["candidate"]
    tail = f"always-valid p={row['p_value']:.2g} <= {alpha:.3g}"
    if metric == "p95_latency_ms":
        return (
            f"guard p95_latency_ms failed: {candidate} p95 {_g(row['candidate_value'])} ms"
            f" against {control} {_g(row['control_value'])} ms;"
            f" {row['candidate_share_over_threshold']:.1%} of {candidate}'s requests are slower"
            f" than {1 + row['allowance']:g} x {control}'s p95 ({row['threshold_ms']:.0f} ms),"
            f" at least {row['worse_by']:.1%} more than the"
            f" {row['control_share_over_p95']:.1%} of {control}'s above its p95 ({tail})"
        )
    unit = " (relative)" if row["scale"] == "relative" else ""
    return (
        f"guard {metric} failed: {candidate} is worse than {control} by at"
        f" least {_g(row['worse_by'])}{unit}, more than the allowed {row['allowance']:g}"
        f" ({control} {_g(row['control_value'])}, {candidate} {_g(row['candidate_value'])};"
        f" {tail})"
    )


def _guard_checks(
    experiment: Experiment, metrics: Mapping[str, VariantMetrics], alpha: float, n_tune: int
) -> tuple[list[dict[str, Any]], list[str]]:
    control = experiment.control.name
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for candidate in experiment.candidates:
        for guard in experiment.guards:
            result = _guards.compare(
                guard,
                metrics[control],
                metrics[candidate.name],
                alpha,
                n_tune,
                pairwise=experiment.shadow is not None,
            )
            row = _guard_row(
                guard, candidate.name, metrics[control], metrics[candidate.name], result
            )
            rows.append(row)
            if result.worse:
                failures.append(_failure(row, control, alpha))
    return rows, failures


def decide(
    experiment: Experiment,
    step_index: int,
    step_started_at: datetime,
    now: datetime,
    metrics: Mapping[str, VariantMetrics],
) -> Decision:
    """The decision for the step window that began at ``step_started_at``.

    ``metrics`` maps variant names to their window's traffic; a variant left
    out had none. ``step_index`` is ignored for split and shadow experiments.
    """
    names = [v.name for v in experiment.variants]
    unknown = set(metrics) - set(names)
    if unknown:
        raise ValueError(f"metrics for variants the experiment lacks: {sorted(unknown)}")
    full = {name: metrics.get(name, VariantMetrics()) for name in names}
    mode = "ramp" if experiment.ramp else ("split" if experiment.split else "shadow")
    shares = shares_at(experiment, step_index if experiment.ramp else 0)
    held_s = (now - step_started_at).total_seconds()
    guards = max(1, len(experiment.guards) * len(experiment.candidates))
    alpha = experiment.alpha / (guards * _analysed_steps(experiment))
    ramp = experiment.ramp
    n_tune = ramp.min_samples if ramp else stats.N_TUNE
    step: dict[str, Any] = {"index": None, "shares": shares, "held_s": held_s}
    if ramp is not None:
        step.update(
            index=step_index,
            last=step_index == len(ramp.steps) - 1,
            hold_s=ramp.hold_s,
            min_samples=ramp.min_samples,
        )
    numbers: dict[str, Any] = {
        "mode": mode,
        "step": step,
        "alpha": experiment.alpha,
        "alpha_per_test": alpha,
        "variants": {name: _summary(m) for name, m in full.items()},
    }

    rollback: list[str] = []
    if mode == "shadow":  # mirrored copies are dropped when the queue is full, by design
        numbers["srm"] = None
    else:
        numbers["srm"], srm_reason = _srm(experiment, shares, full)
        if srm_reason:
            rollback.append(srm_reason)
    numbers["guards"], failures = _guard_checks(experiment, full, alpha, n_tune)
    rollback.extend(failures)
    if rollback:
        return Decision("rollback", tuple(rollback), numbers)
    if ramp is None:
        what = "a fixed split" if mode == "split" else "shadow mode"
        return Decision("hold", (f"{what} never advances; no guard has failed",), numbers)
    action, reasons = _ramp_verdict(ramp, step_index, shares, held_s, full)
    return Decision(action, reasons, numbers)


def _ramp_verdict(
    ramp: Ramp,
    step_index: int,
    shares: Mapping[str, float],
    held_s: float,
    metrics: Mapping[str, VariantMetrics],
) -> tuple[Action, tuple[str, ...]]:
    """No guard failed: advance or complete once held and sampled, else say what is missing."""
    waiting: list[str] = []
    if held_s < ramp.hold_s:
        waiting.append(
            f"holding step {step_index + 1} of {len(ramp.steps)} ({_shares_text(shares)}):"
            f" {held_s:.0f} s of {ramp.hold_s:g} s"
        )
    short = [
        f"{name} {metrics[name].n}/{ramp.min_samples}"
        for name, share in shares.items()
        if share > 0 and metrics[name].n < ramp.min_samples
    ]
    if short:
        waiting.append("waiting for samples: " + ", ".join(short))
    if waiting:
        return "hold", tuple(waiting)
    done = f"held {held_s:.0f} s and every variant has {ramp.min_samples} samples; no guard failed"
    if step_index == len(ramp.steps) - 1:
        return "complete", (f"last step ({_shares_text(shares)}): {done}",)
    upcoming = ramp.steps[step_index + 1]
    return "advance", (
        f"step {step_index + 1} ({_shares_text(shares)}): {done}; next {upcoming:g} %",
    )


def _shares_text(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {share:g} %" for name, share in shares.items())
