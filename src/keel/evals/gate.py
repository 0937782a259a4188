"""The gate: does a candidate's comparison allow it through?

It fails when

- a **floor** is missed: a scorer's mean on the candidate is below the
  suite's ``gate.floors[scorer]``; or
- a scorer's pass rate **regressed**: it dropped by more than
  ``max_regression_points`` percentage points against the baseline *and*
  the drop is significant, the exact McNemar p-value (Holm-adjusted across
  the suite's scorers, so more scorers do not mean more false alarms) below
  ``alpha``.

A drop that is large but not significant (few examples, much noise) and a
significant drop within the allowance both pass. Warnings never fail the
gate: tokens per call up more than ``token_inflation_warn``, errored
examples, a tagged slice that regressed, flaky repeats, no baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from keel.evals.compare import Comparison, ScorerStats
from keel.evals.suite import GateConfig

__all__ = ["Check", "Verdict", "apply_gate", "holm_adjust", "regressed"]


@dataclass(frozen=True, slots=True)
class Check:
    kind: Literal["floor", "regression"]
    scorer: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    checks: tuple[Check, ...]
    warnings: tuple[str, ...]

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(c.detail for c in self.checks if not c.passed)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def regressed(delta_points: float, p_value: float, *, max_points: float, alpha: float) -> bool:
    """A drop beyond the allowance that is also significant."""
    return delta_points < -max_points and p_value < alpha


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _floor_checks(comparison: Comparison, gate: GateConfig) -> list[Check]:
    checks = []
    for name, floor in gate.floors.items():
        stats = comparison.scorer(name)
        ok = stats.mean >= floor
        verb = "meets" if ok else "is below"
        checks.append(
            Check("floor", name, ok, f"{name}: mean {stats.mean:.3f} {verb} the floor {floor:.3f}")
        )
    return checks


def _regression_checks(comparison: Comparison, gate: GateConfig) -> list[Check]:
    tested = [s for s in comparison.scorers if s.test is not None and s.delta_points is not None]
    adjusted = holm_adjust([s.test.p_value for s in tested if s.test is not None])
    checks = []
    for stats, p in zip(tested, adjusted, strict=True):
        assert stats.delta_points is not None and stats.test is not None
        bad = regressed(
            stats.delta_points, p, max_points=gate.max_regression_points, alpha=gate.alpha
        )
        checks.append(Check("regression", stats.name, not bad, _regression_detail(stats, p, gate)))
    return checks


def _regression_detail(stats: ScorerStats, p: float, gate: GateConfig) -> str:
    assert stats.delta_points is not None and stats.test is not None
    return (
        f"{stats.name}: pass rate {_pct(stats.baseline_pass_rate)} → {_pct(stats.pass_rate)}"
        f" ({stats.delta_points:+.1f} points; {stats.test.regressions} regressed,"
        f" {stats.test.improvements} improved; p={p:.3g}, allowed -{gate.max_regression_points:g}"
        f" points at p<{gate.alpha:g})"
    )


def _warnings(comparison: Comparison, gate: GateConfig, baseline_present: bool) -> list[str]:
    warnings = []
    if not baseline_present:
        warnings.append("no baseline to compare with: only the floors were checked")
    errored = comparison.overall.errors
    if errored:
        warnings.append(
            f"{errored} of {comparison.n} examples errored; they count as failures in every mean"
        )
    inflation = comparison.token_inflation
    if inflation is not None and inflation > gate.token_inflation_warn:
        warnings.append(
            f"tokens per call up {inflation * 100:.1f}% against the baseline"
            f" (warns above {gate.token_inflation_warn * 100:g}%)"
        )
    for s in comparison.slices:
        if s.test is None or s.delta_points is None:
            continue
        if regressed(
            s.delta_points, s.test.p_value, max_points=gate.max_regression_points, alpha=gate.alpha
        ):
            warnings.append(
                f"slice {s.tag!r} ({s.n} examples) regressed: pass rate"
                f" {_pct(s.baseline_pass_rate)} → {_pct(s.pass_rate)}"
                f" ({s.delta_points:+.1f} points, p={s.test.p_value:.3g})"
            )
    for stats in comparison.scorers:
        if stats.flaky:
            warnings.append(f"{stats.name}: {stats.flaky} examples flaky across repeats")
    return warnings


def apply_gate(comparison: Comparison, gate: GateConfig, *, baseline_present: bool) -> Verdict:
    """The verdict: every floor and regression check, and the warnings."""
    checks = _floor_checks(comparison, gate) + _regression_checks(comparison, gate)
    return Verdict(
        passed=all(c.passed for c in checks),
        checks=tuple(checks),
        warnings=tuple(_warnings(comparison, gate, baseline_present)),
    )
