"""The sample-ratio check and the fixed-horizon tests, against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keel.experiments.stats import (
    chance_to_beat,
    mean_ci,
    proportion_ci,
    srm,
    two_proportion_ztest,
    welch_ttest,
)

# --- sample-ratio mismatch ----------------------------------------------------------


def test_srm_matches_the_chi_square_goodness_of_fit() -> None:
    result = srm({"a": 100, "control": 120, "b": 80}, {"a": 1, "control": 1, "b": 1})
    assert (result.chi2, result.df) == (8.0, 2)
    assert result.p_value == pytest.approx(0.018315638888734182, rel=1e-9)
    assert result.expected == {"a": 100, "control": 100, "b": 100}


def test_srm_triggers_on_a_48_52_split_at_large_n() -> None:
    shares = {"control": 50.0, "v3": 50.0}
    assert srm({"control": 4800, "v3": 5200}, shares).p_value == pytest.approx(6.334e-5, rel=1e-3)
    assert srm({"control": 48_000, "v3": 52_000}, shares).p_value < 1e-30
    # Small n: the same proportions are no evidence.
    assert srm({"control": 48, "v3": 52}, shares).p_value > 0.5


def test_srm_does_not_trigger_on_a_fair_split() -> None:
    rng = np.random.default_rng(8)
    shares = {"control": 95.0, "v3": 5.0}
    p_values = []
    for _ in range(200):
        n_v3 = int(rng.binomial(100_000, 0.05))
        p_values.append(srm({"control": 100_000 - n_v3, "v3": n_v3}, shares).p_value)
    assert min(p_values) > 0.001
    # Under H0 the p-value is uniform: about half fall below 0.5.
    assert 70 < sum(p < 0.5 for p in p_values) < 130


def test_srm_leaves_out_zero_shares_and_small_counts() -> None:
    # At 100 %, control stragglers from replicas still on the old split are no mismatch.
    at_full = srm({"control": 40, "v3": 10_000}, {"control": 0, "v3": 100})
    assert (at_full.df, at_full.p_value) == (0, 1.0)
    # 1 % of 300 is 3 expected: too few for the chi-square approximation.
    assert srm({"control": 300, "v3": 0}, {"control": 99, "v3": 1}).p_value == 1.0
    assert srm({"control": 2000, "v3": 0}, {"control": 99, "v3": 1}).p_value < 0.001


# --- fixed horizon -------------------------------------------------------------------


def test_two_proportion_ztest() -> None:
    result = two_proportion_ztest(50, 1000, 80, 1000)
    assert result.estimate == pytest.approx(0.03)
    assert result.statistic == pytest.approx(2.721095431170472, rel=1e-9)
    assert result.p_value == pytest.approx(0.00650659748363783, rel=1e-6)
    se = math.sqrt(0.05 * 0.95 / 1000 + 0.08 * 0.92 / 1000)
    assert result.lower == pytest.approx(0.03 - 1.959963984540054 * se, rel=1e-9)
    assert result.df is None
    assert two_proportion_ztest(0, 10, 0, 10).p_value == 1.0


def test_welch_ttest_matches_scipy() -> None:
    control, candidate = [1, 2, 3, 4, 5.5], [2, 4, 4.5, 6, 7, 9]
    result = welch_ttest(control, candidate)
    assert result.statistic == pytest.approx(1.8218641943786527, rel=1e-9)  # candidate - control
    assert result.df == pytest.approx(8.838402766601396, rel=1e-9)
    assert result.p_value == pytest.approx(0.10240906222451905, rel=1e-8)
    # scipy's interval is for control - candidate: (-5.2012, 0.5679).
    assert result.lower == pytest.approx(-0.5679097940741502, rel=1e-8)
    assert result.upper == pytest.approx(5.2012431274074835, rel=1e-8)


def test_welch_degenerate_cases() -> None:
    assert welch_ttest([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert welch_ttest([1.0, 1.0], [2.0, 2.0]).p_value == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        welch_ttest([1.0], [1.0, 2.0])


def test_intervals() -> None:
    lo, hi = proportion_ci(0, 10)  # Wilson stays inside [0, 1] where Wald collapses
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775328, rel=1e-6)
    lo, hi = proportion_ci(50, 100, level=0.9)
    assert (lo + hi) / 2 == pytest.approx(0.5)
    assert mean_ci([1, 2, 3, 4, 5.5]) == pytest.approx((0.9315270516956318, 5.268472948304368))
    with pytest.raises(ValueError):
        proportion_ci(1, 0)


def test_chance_to_beat_control() -> None:
    # Exact value by numerical integration of Beta(16, 86) > Beta(11, 91): 0.85328.
    value = chance_to_beat(10, 100, 15, 100)
    assert value == pytest.approx(0.8532837899339659, abs=0.004)
    assert value == chance_to_beat(10, 100, 15, 100)  # fixed seed: reproducible
    assert chance_to_beat(10, 100, 15, 100, higher_is_better=False) == pytest.approx(
        1 - value, abs=1e-9
    )
    assert chance_to_beat(500, 1000, 500, 1000) == pytest.approx(0.5, abs=0.005)
