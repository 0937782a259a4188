"""The always-valid tests: false rollbacks under continuous monitoring, power, the public API.

The simulations run the vectorised core (``_sequential``) that the public
functions wrap — a test below checks the two agree — over 2,000 runs each
checked at every 50 samples up to 5,000 (100 looks per run).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from keel.experiments import _sequential as sq
from keel.experiments import stats
from keel.experiments.stats import (
    sequential_mean_vs,
    sequential_means,
    sequential_proportions,
    sequential_quantile,
)

ALPHA = 0.05
RUNS = 2_000
STEP = 50
LOOKS = np.arange(STEP, 5_000 + 1, STEP)
Floats = sq.Floats


def fired(d: Floats, v: Floats, n_small: Floats, margin: float = 0.0) -> Floats:
    """Per run: did the test ever say "worse", at any look (with the public min_n rule)?"""
    tau2 = sq.mixing_variance(v, n_small, ALPHA, stats.N_TUNE)
    log_l = sq.log_evidence(d, v, margin, tau2)
    hit = (log_l >= math.log(1 / ALPHA)) & (n_small >= stats.MIN_N)
    return np.asarray(hit.any(axis=1), dtype=np.float64)


def proportion_runs(
    p_control: float, p_candidate: float, ratio: int = 1, margin: float = 0.0, seed: int = 1
) -> float:
    """Share of runs rolled back; the control gets ``ratio`` x the candidate's traffic."""
    rng = np.random.default_rng(seed)
    x_b = rng.binomial(STEP, p_candidate, (RUNS, LOOKS.size)).cumsum(axis=1).astype(float)
    x_a = rng.binomial(STEP * ratio, p_control, (RUNS, LOOKS.size)).cumsum(axis=1).astype(float)
    n_b = np.broadcast_to(LOOKS.astype(float), x_b.shape)
    n_a = n_b * ratio
    d, v = sq.proportions(x_a, n_a, x_b, n_b)
    return float(fired(d, v, n_b, margin).mean())


def mean_runs(
    draw: str, shift: float = 1.0, margin: float = 0.0, log: bool = False, seed: int = 2
) -> float:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):  # in chunks of 500 runs: 2 x 500 x 5,000 floats at a time
        size = (RUNS // 4, int(LOOKS[-1]))
        if draw == "normal":
            a, b = rng.normal(size=size), rng.normal(size=size) + shift - 1
        else:
            a, b = rng.lognormal(6, 0.8, size), rng.lognormal(6, 0.8, size) * shift
        if log:
            a, b = np.log(a), np.log(b)
        n = LOOKS.astype(float)
        idx = LOOKS - 1
        m_a, m_b = a.cumsum(1)[:, idx] / n, b.cumsum(1)[:, idx] / n
        var_a = ((a * a).cumsum(1)[:, idx] - n * m_a**2) / (n - 1)
        var_b = ((b * b).cumsum(1)[:, idx] - n * m_b**2) / (n - 1)
        v = var_a / n + var_b / n
        out.append(fired(m_b - m_a, v, np.broadcast_to(n, v.shape), margin))
    return float(np.concatenate(out).mean())


# --- false rollbacks on equal variants ---------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "ratio"),
    [(0.05, 1), (0.5, 1), (0.01, 1), (0.02, 19)],  # 19: the control's share at a 5 % step
)
def test_equal_rates_are_rarely_rolled_back_however_often_checked(rate: float, ratio: int) -> None:
    assert proportion_runs(rate, rate, ratio) <= ALPHA


def test_equal_means_are_rarely_rolled_back() -> None:
    assert mean_runs("normal") <= ALPHA


def test_equal_latencies_on_the_log_scale_are_rarely_rolled_back() -> None:
    assert mean_runs("lognormal", log=True) <= ALPHA


def test_naive_peeking_would_roll_back_far_more_often() -> None:
    # The point of the exercise: a fixed-horizon z-test checked at every look.
    rng = np.random.default_rng(3)
    x = rng.binomial(STEP, 0.05, (RUNS, LOOKS.size, 2)).cumsum(axis=1).astype(float)
    n = LOOKS.astype(float)[None, :]
    d, v = sq.proportions(x[..., 0], n, x[..., 1], n)
    naive = float(((d / np.sqrt(v)) > 1.645).any(axis=1).mean())
    assert naive > 0.25  # measured: 30 %


def test_p95_guard_on_equal_latencies_is_rarely_rolled_back() -> None:
    rng = np.random.default_rng(4)
    runs, looks = 400, np.arange(100, 2_001, 100)
    a = rng.lognormal(6, 0.8, (runs, int(looks[-1])))
    b = rng.lognormal(6, 0.8, (runs, int(looks[-1])))
    hit = np.zeros(runs, dtype=bool)
    for n in looks:
        threshold = np.quantile(a[:, :n], 0.95, axis=1, keepdims=True)
        x_a = (a[:, :n] > threshold).sum(axis=1).astype(float)
        x_b = (b[:, :n] > threshold).sum(axis=1).astype(float)
        size = np.full(runs, float(n))
        d, v = sq.proportions(x_a, size, x_b, size)
        tau2 = sq.mixing_variance(v, size, ALPHA, stats.N_TUNE)
        hit |= sq.log_evidence(d, v, 0.0, tau2) >= math.log(1 / ALPHA)
    assert hit.mean() <= ALPHA


# --- power ------------------------------------------------------------------------------


def test_a_real_error_regression_is_caught() -> None:
    # 2 % -> 6 % errors against a 1-point allowance.
    assert proportion_runs(0.02, 0.06, margin=0.01) > 0.95


@pytest.mark.parametrize(
    ("control", "candidate", "margin"), [(0.02, 0.04, 0.02), (0.1, 0.15, 0.05)]
)
def test_a_regression_exactly_at_the_allowance_is_rarely_rolled_back(
    control: float, candidate: float, margin: float
) -> None:
    # The hardest case of H0 "worse by at most the allowance": worse by exactly it.
    assert proportion_runs(control, candidate, margin=margin) <= ALPHA


def test_a_real_latency_regression_is_caught() -> None:
    # 50 % slower against a 20 % allowance, compared on log ms.
    assert mean_runs("lognormal", shift=1.5, margin=math.log(1.2), log=True) > 0.95


# --- the public functions ---------------------------------------------------------------


def test_public_function_agrees_with_the_vectorised_core() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        n_a, n_b = (int(n) for n in rng.integers(30, 3000, 2))
        x_a, x_b = int(rng.binomial(n_a, 0.05)), int(rng.binomial(n_b, 0.08))
        result = sequential_proportions(x_a, n_a, x_b, n_b, margin=0.01, alpha=ALPHA)
        d, v = sq.proportions(*(np.array([float(k)]) for k in (x_a, n_a, x_b, n_b)))
        tau2 = sq.mixing_variance(v, np.array([float(min(n_a, n_b))]), ALPHA, stats.N_TUNE)
        expected = float(sq.log_evidence(d, v, 0.01, tau2)[0]) >= math.log(1 / ALPHA)
        assert result.worse is expected
        assert result.worse is (result.worse_by is not None and result.worse_by > 0.01)


def test_a_clear_regression_reads_as_such() -> None:
    result = sequential_proportions(20, 2000, 120, 2000, margin=0.02)
    assert result.worse and result.p_value < 1e-4
    assert result.estimate == pytest.approx(0.05)
    assert result.lower is not None and result.upper is not None and result.worse_by is not None
    assert result.lower < result.worse_by < 0.05 < result.upper
    assert (result.n_control, result.n_candidate) == (2000, 2000)


def test_better_candidate_is_not_worse() -> None:
    result = sequential_proportions(120, 2000, 20, 2000)
    assert not result.worse and result.p_value == 1.0
    assert result.worse_by is not None and result.worse_by < 0


def test_too_few_samples_is_inconclusive() -> None:
    result = sequential_proportions(0, 10, 10, 10)
    assert (result.worse, result.p_value, result.estimate) == (False, 1.0, None)
    assert sequential_means([1.0] * 5, [9.0] * 5).estimate is None


def test_direction_for_scores() -> None:
    rng = np.random.default_rng(6)
    control = rng.uniform(0.6, 1.0, 400).tolist()
    worse = rng.uniform(0.3, 0.7, 400).tolist()
    assert sequential_means(control, worse, margin=0.05, higher_is_worse=False).worse
    assert not sequential_means(worse, control, margin=0.05, higher_is_worse=False).worse


def test_relative_scales_report_relative_changes() -> None:
    control = [1.0, 2.0, 3.0] * 100
    candidate = [1.5, 3.0, 4.5] * 100
    ratio = sequential_means(control, candidate, margin=0.2, scale="ratio")
    assert ratio.estimate == pytest.approx(0.5)
    assert ratio.worse and ratio.worse_by is not None and 0.2 < ratio.worse_by < 0.5
    geometric = sequential_means(control, candidate, margin=0.2, scale="geometric")
    assert geometric.estimate == pytest.approx(0.5)
    assert geometric.worse
    assert not sequential_means(control, candidate, margin=0.6, scale="ratio").worse
    with pytest.raises(ValueError, match="> 0"):
        sequential_means([0.0] * 40, [1.0] * 40, scale="geometric")


def test_identical_constant_values_are_no_evidence_and_a_constant_gap_is() -> None:
    assert not sequential_means([0.01] * 50, [0.01] * 50, scale="ratio").worse
    assert sequential_means([0.01] * 50, [0.02] * 50, margin=0.2, scale="ratio").worse


def test_p95_guard_catches_a_slower_tail() -> None:
    rng = np.random.default_rng(7)
    control = rng.lognormal(6, 0.5, 3000)
    slower = rng.lognormal(6, 0.5, 3000) * 1.6
    result = sequential_quantile(control, slower, margin=0.2)
    assert result.worse and result.margin == 0.2
    same = sequential_quantile(control, rng.lognormal(6, 0.5, 3000), margin=0.2)
    assert not same.worse


def test_one_sample_against_a_tie() -> None:
    prefers_control = [0.0] * 70 + [0.5] * 20 + [1.0] * 10  # mean 0.2
    result = sequential_mean_vs(prefers_control, 0.5, margin=0.1, higher_is_worse=False)
    assert result.worse and result.estimate == pytest.approx(-0.3)
    assert not sequential_mean_vs([0.5, 0.4, 0.6] * 20, 0.5, higher_is_worse=False).worse


@pytest.mark.parametrize(("margin", "alpha"), [(-0.1, 0.05), (0.0, 0.0), (0.0, 1.0)])
def test_bad_parameters_are_refused(margin: float, alpha: float) -> None:
    with pytest.raises(ValueError):
        sequential_proportions(1, 100, 1, 100, margin=margin, alpha=alpha)


def test_tuned_mixing_ratio() -> None:
    # The boundary (1 + 1/u)(2 log(1/alpha) + log(1 + u)) is narrowest near u = 8.2.
    assert sq.tuned_ratio(0.05) == pytest.approx(8.21, abs=0.01)
