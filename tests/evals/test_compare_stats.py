"""Statistics: exact McNemar against known values, reproducible bootstrap intervals, slices."""

from __future__ import annotations

import math

import pytest
from runner_support import examples

from keel.evals._results import ExampleResult, RunResult, ScorerOutcome
from keel.evals.compare import (
    ALL,
    bootstrap_delta_ci,
    bootstrap_mean_ci,
    compare,
    mcnemar,
    mcnemar_p,
)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        # scipy.stats.binomtest(k, n, 0.5).pvalue (two-sided), and by hand:
        (1, 6, 0.125),  # 2 * (1 + 7) / 2**7
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 2**10
        (0, 5, 0.0625),  # 2 / 2**5
        (0, 0, 1.0),
        (5, 5, 1.0),
        (3, 4, 1.0),
        (10, 0, 0.001953125),  # 2 / 2**10
        (13, 3, 0.021270751953125),  # 2 * (1 + 16 + 120 + 560) / 2**16
    ],
)
def test_exact_mcnemar_known_values(b: int, c: int, p: float) -> None:
    assert mcnemar_p(b, c) == pytest.approx(p, rel=1e-12)
    assert mcnemar_p(c, b) == mcnemar_p(b, c)


def test_mcnemar_on_large_counts_stays_exact() -> None:
    # 600 vs 400 discordant pairs: a normal approximation gives z = 200 / sqrt(1000) ≈ 6.32.
    p = mcnemar_p(600, 400)
    assert 0 < p < 1e-8
    assert math.isfinite(p)


def test_mcnemar_counts_discordant_pairs() -> None:
    test = mcnemar([True, True, False, False, True], [True, False, True, False, False])
    assert (test.regressions, test.improvements) == (2, 1)
    assert test.p_value == pytest.approx(1.0)


def test_bootstrap_is_reproducible_and_covers_the_mean() -> None:
    values = [1.0] * 70 + [0.0] * 30
    first = bootstrap_mean_ci(values)
    assert first == bootstrap_mean_ci(values)
    assert first.low < 0.7 < first.high
    # The normal-approximation half width is 1.96 * sqrt(.7 * .3 / 100) ≈ 0.09.
    assert 0.06 < (first.high - first.low) / 2 < 0.12


def test_paired_bootstrap_sees_a_constant_shift_exactly() -> None:
    base = [0.1 * (i % 10) for i in range(50)]
    interval = bootstrap_delta_ci([b + 0.05 for b in base], base)
    assert interval.low == pytest.approx(0.05) and interval.high == pytest.approx(0.05)


def _run(passes: list[bool], *, tags: list[tuple[str, ...]] | None = None, tokens: float = 10):
    rows = tuple(
        ExampleResult(
            id=f"ex{i:04d}",
            tags=tags[i] if tags else (),
            scores={"exact": ScorerOutcome(1.0 if ok else 0.0, ok)},
            input_tokens=tokens,
            output_tokens=2,
            cost_usd=0.001,
            latency_ms=10.0 + i,
        )
        for i, ok in enumerate(passes)
    )
    return RunResult("s", "t", None, None, None, "h", ("exact",), rows)


def test_compare_pairs_by_id_and_reports_deltas() -> None:
    base = _run([True] * 10)
    cand = _run([True] * 8 + [False] * 2, tokens=12)
    comparison = compare(cand, base)
    exact = comparison.scorer("exact")
    assert comparison.paired == 10
    assert exact.pass_rate == 0.8 and exact.baseline_pass_rate == 1.0
    assert exact.delta_points == pytest.approx(-20.0)
    assert exact.test is not None and exact.test.regressions == 2
    assert comparison.scorer(ALL).delta_points == pytest.approx(-20.0)
    assert comparison.token_inflation == pytest.approx(14 / 12 - 1)


def test_compare_pairs_only_shared_ids() -> None:
    base = _run([True] * 5)
    cand = _run([True] * 8)
    comparison = compare(cand, base)
    assert comparison.n == 8 and comparison.paired == 5


def test_slices_and_the_worst_tail() -> None:
    tags = [("math",) if i % 4 == 0 else ("chat",) for i in range(40)]
    base = _run([True] * 40, tags=tags)
    cand = _run([i % 4 != 0 for i in range(40)], tags=tags)
    comparison = compare(cand, base)
    by_tag = {s.tag: s for s in comparison.slices}
    assert by_tag["math"].n == 10 and by_tag["math"].pass_rate == 0.0
    assert by_tag["math"].delta_points == pytest.approx(-100.0)
    assert by_tag["chat"].delta_points == pytest.approx(0.0)
    # Bottom 10% of 40 examples: the 4 lowest scores, ties in dataset order.
    assert [t.id for t in comparison.tail] == ["ex0000", "ex0004", "ex0008", "ex0012"]
    assert all(t.baseline_score == 1.0 for t in comparison.tail)


def test_compare_without_baseline_describes_the_candidate() -> None:
    comparison = compare(_run([True, False, True, True]), None)
    exact = comparison.scorer("exact")
    assert comparison.paired == 0 and exact.delta_points is None and exact.test is None
    assert exact.mean == 0.75
    assert {u.metric for u in comparison.usage} >= {"total_tokens", "cost_usd", "latency_p95_ms"}


def test_examples_helper_is_stable() -> None:
    assert [e.id for e in examples(3)] == ["ex0000", "ex0001", "ex0002"]
