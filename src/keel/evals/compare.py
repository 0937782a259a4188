"""Candidate vs baseline: means with bootstrap intervals, an exact paired test, slices, tails.

Examples are paired by id: every delta is over the examples both runs
scored. Intervals are 95% percentile intervals from a paired bootstrap
(the same resampled examples on both sides), with a fixed seed so the same
runs always give the same numbers. Pass/fail changes are tested with the
exact McNemar test: under "no change", each discordant pair (one side
passed, the other failed) is a fair coin, so the two-sided p-value is a
binomial tail on the discordant pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from keel.evals._results import ExampleResult, RunResult

__all__ = [
    "ALL",
    "Comparison",
    "Interval",
    "PairedTest",
    "ScorerStats",
    "SliceStats",
    "TailRow",
    "UsageStats",
    "bootstrap_delta_ci",
    "bootstrap_mean_ci",
    "compare",
    "mcnemar",
    "mcnemar_p",
]

ALL = "all"  # the pseudo-scorer "every scorer passed"
SEED = 20_240_601
RESAMPLES = 2000
LEVEL = 0.95
TAIL_SHARE = 0.10
_CHUNK = 250  # resamples per batch: bounds memory at large n

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class PairedTest:
    """Exact McNemar: ``regressions`` passed before and fail now, ``improvements`` the reverse."""

    regressions: int
    improvements: int
    p_value: float


@dataclass(frozen=True, slots=True)
class ScorerStats:
    """One scorer on the candidate, and against the baseline over the paired examples."""

    name: str
    n: int
    mean: float
    mean_ci: Interval
    pass_rate: float
    errors: int
    flaky: int = 0
    baseline_mean: float | None = None
    baseline_pass_rate: float | None = None
    delta_mean: float | None = None
    delta_ci: Interval | None = None
    delta_points: float | None = None  # pass-rate change, percentage points
    test: PairedTest | None = None


@dataclass(frozen=True, slots=True)
class SliceStats:
    """The examples with one tag: every-scorer pass rate, against the baseline."""

    tag: str
    n: int
    pass_rate: float
    mean: float
    baseline_pass_rate: float | None = None
    delta_points: float | None = None
    test: PairedTest | None = None


@dataclass(frozen=True, slots=True)
class TailRow:
    id: str
    tags: tuple[str, ...]
    score: float
    baseline_score: float | None
    passed: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class UsageStats:
    """A per-call usage number on each side; ``change`` is relative (0.12 = +12%)."""

    metric: str
    candidate: float | None
    baseline: float | None = None

    @property
    def change(self) -> float | None:
        if self.candidate is None or self.baseline is None or self.baseline == 0:
            return None
        return self.candidate / self.baseline - 1


@dataclass(frozen=True, slots=True)
class Comparison:
    n: int  # candidate examples
    paired: int  # examples both sides scored (0 without a baseline)
    scorers: tuple[ScorerStats, ...]
    overall: ScorerStats  # ALL: an example passes when every scorer passes
    slices: tuple[SliceStats, ...]
    tail: tuple[TailRow, ...]
    usage: tuple[UsageStats, ...]

    @property
    def token_inflation(self) -> float | None:
        return next((u.change for u in self.usage if u.metric == "total_tokens"), None)

    def scorer(self, name: str) -> ScorerStats:
        return next(s for s in (*self.scorers, self.overall) if s.name == name)


# --- statistics ---------------------------------------------------------------------------


def mcnemar_p(regressions: int, improvements: int) -> float:
    """Two-sided exact McNemar p-value: a binomial(n, 1/2) tail on the discordant pairs."""
    n = regressions + improvements
    if n == 0:
        return 1.0
    k = min(regressions, improvements)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return float(min(1.0, 2 * tail / 2**n))  # exact integers; the division rounds once


def mcnemar(baseline: Sequence[bool], candidate: Sequence[bool]) -> PairedTest:
    """The paired test on two aligned pass/fail sequences."""
    regressions = sum(1 for b, c in zip(baseline, candidate, strict=True) if b and not c)
    improvements = sum(1 for b, c in zip(baseline, candidate, strict=True) if c and not b)
    return PairedTest(regressions, improvements, mcnemar_p(regressions, improvements))


def _resampled_means(values: Floats, seed: int, resamples: int) -> Floats:
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        index = rng.integers(0, n, size=(size, n))
        out[start : start + size] = values[index].mean(axis=1)
    return out


def _interval(samples: Floats, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(low), float(high))


def bootstrap_mean_ci(
    values: Sequence[float], *, seed: int = SEED, resamples: int = RESAMPLES, level: float = LEVEL
) -> Interval:
    """A percentile bootstrap interval for the mean of ``values``."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) == 0:
        return Interval(0.0, 0.0)
    return _interval(_resampled_means(array, seed, resamples), level)


def bootstrap_delta_ci(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> Interval:
    """A paired bootstrap interval for mean(candidate - baseline), examples resampled together."""
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if len(diff) == 0:
        return Interval(0.0, 0.0)
    return _interval(_resampled_means(diff, seed, resamples), level)


# --- the comparison -----------------------------------------------------------------------


def _value(example: ExampleResult, name: str) -> float:
    return example.mean_score if name == ALL else example.scores[name].value


def _passed(example: ExampleResult, name: str) -> bool:
    return example.passed if name == ALL else example.scores[name].passed


def _scorer_stats(
    name: str,
    examples: Sequence[ExampleResult],
    pairs: Sequence[tuple[ExampleResult, ExampleResult]],
    resamples: int,
) -> ScorerStats:
    values = [_value(e, name) for e in examples]
    passes = [_passed(e, name) for e in examples]
    if name == ALL:
        errors, flaky = sum(e.errored for e in examples), 0
    else:
        errors = sum(1 for e in examples if e.scores[name].error)
        flaky = sum(1 for e in examples if e.scores[name].flaky)
    stats = ScorerStats(
        name=name,
        n=len(examples),
        mean=sum(values) / len(values) if values else 0.0,
        mean_ci=bootstrap_mean_ci(values, resamples=resamples),
        pass_rate=sum(passes) / len(passes) if passes else 0.0,
        errors=errors,
        flaky=flaky,
    )
    if not pairs:
        return stats
    cand = [_value(c, name) for c, _ in pairs]
    base = [_value(b, name) for _, b in pairs]
    cand_pass = [_passed(c, name) for c, _ in pairs]
    base_pass = [_passed(b, name) for _, b in pairs]
    n = len(pairs)
    return replace(
        stats,
        baseline_mean=sum(base) / n,
        baseline_pass_rate=sum(base_pass) / n,
        delta_mean=(sum(cand) - sum(base)) / n,
        delta_ci=bootstrap_delta_ci(cand, base, resamples=resamples),
        delta_points=(sum(cand_pass) - sum(base_pass)) / n * 100,
        test=mcnemar(base_pass, cand_pass),
    )


def _slices(
    examples: Sequence[ExampleResult], baseline: dict[str, ExampleResult] | None
) -> tuple[SliceStats, ...]:
    tags = sorted({tag for e in examples for tag in e.tags})
    out = []
    for tag in tags:
        members = [e for e in examples if tag in e.tags]
        n = len(members)
        stats = SliceStats(
            tag=tag,
            n=n,
            pass_rate=sum(e.passed for e in members) / n,
            mean=sum(e.mean_score for e in members) / n,
        )
        pairs = [(e, baseline[e.id]) for e in members if baseline and e.id in baseline]
        if pairs:
            base_pass = [b.passed for _, b in pairs]
            cand_pass = [c.passed for c, _ in pairs]
            stats = SliceStats(
                tag=tag,
                n=n,
                pass_rate=stats.pass_rate,
                mean=stats.mean,
                baseline_pass_rate=sum(base_pass) / len(pairs),
                delta_points=(sum(cand_pass) - sum(base_pass)) / len(pairs) * 100,
                test=mcnemar(base_pass, cand_pass),
            )
        out.append(stats)
    return tuple(out)


def _tail(
    examples: Sequence[ExampleResult], baseline: dict[str, ExampleResult] | None
) -> tuple[TailRow, ...]:
    if not examples:
        return ()
    size = max(1, math.ceil(len(examples) * TAIL_SHARE))
    order = sorted(range(len(examples)), key=lambda i: (examples[i].mean_score, i))[:size]
    rows = []
    for i in order:
        e = examples[i]
        before = baseline.get(e.id) if baseline else None
        error = e.error or next((o.error for o in e.scores.values() if o.error), None)
        rows.append(
            TailRow(
                id=e.id,
                tags=e.tags,
                score=e.mean_score,
                baseline_score=None if before is None else before.mean_score,
                passed=e.passed,
                error=error,
            )
        )
    return tuple(rows)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def _usage_of(examples: Sequence[ExampleResult]) -> dict[str, float | None]:
    # Per answered call: a call that failed used no tokens and would drag the means down.
    answered = [e for e in examples if e.latency_ms is not None]
    n = len(answered) or 1
    costs = [e.cost_usd for e in answered]
    latencies = [e.latency_ms for e in answered if e.latency_ms is not None]
    inputs = sum(e.input_tokens for e in answered) / n
    outputs = sum(e.output_tokens for e in answered) / n
    return {
        "input_tokens": inputs,
        "output_tokens": outputs,
        "total_tokens": inputs + outputs,
        "cost_usd": None if any(c is None for c in costs) else math.fsum(c or 0 for c in costs) / n,
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
    }


def compare(
    candidate: RunResult, baseline: RunResult | None, *, resamples: int = RESAMPLES
) -> Comparison:
    """Compare a candidate run with a baseline run (or describe it alone, given None)."""
    by_id = {e.id: e for e in baseline.examples} if baseline is not None else None
    pairs: list[tuple[ExampleResult, ExampleResult]] = []
    if by_id is not None:
        pairs = [(e, by_id[e.id]) for e in candidate.examples if e.id in by_id]
    examples = candidate.examples
    scorers = tuple(
        _scorer_stats(
            name,
            examples,
            [p for p in pairs if name in p[1].scores],
            resamples,
        )
        for name in candidate.scorers
    )
    overall = _scorer_stats(ALL, examples, pairs, resamples)
    cand_usage = _usage_of([c for c, _ in pairs] if pairs else examples)
    base_usage = _usage_of([b for _, b in pairs]) if pairs else {}
    usage = tuple(
        UsageStats(metric, value, base_usage.get(metric)) for metric, value in cand_usage.items()
    )
    return Comparison(
        n=len(examples),
        paired=len(pairs),
        scorers=scorers,
        overall=overall,
        slices=_slices(examples, by_id),
        tail=_tail(examples, by_id),
        usage=usage,
    )
