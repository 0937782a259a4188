"""Statistics for experiments: sequential guards, the SRM check, fixed-horizon A/B tests.

Every comparison is candidate against control. Three families:

* **Sequential** (``sequential_proportions``, ``sequential_means``,
  ``sequential_quantile``, ``sequential_mean_vs``): always-valid tests for "the candidate is worse
  than control by more than ``margin``", safe to check at every analysis
  interval — the chance of *ever* wrongly saying so is at most ``alpha``
  however often it is looked at. A one-sided normal-mixture SPRT (see
  ``_sequential``); ramp guards use these.
* **Sample-ratio mismatch** (``srm``): a chi-square goodness-of-fit of the
  counts each variant received against the shares it should have.
* **Fixed horizon** (``two_proportion_ztest``, ``welch_ttest``,
  ``proportion_ci``, ``mean_ci``, ``chance_to_beat``): for reading a fixed
  split once, at its planned size. Not valid under peeking.

Pure functions of counts and samples; docs/experiments-stats.md has the formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from keel.experiments import _dist, _sequential

MeanScale = Literal["difference", "ratio", "geometric"]
Values = Sequence[float] | _sequential.Floats  # samples: a list, a tuple or a float array

# The smaller arm needs this many samples before a sequential test may say
# "worse": below it the normal approximation is not to be trusted.
MIN_N = 30
# The mixing variance is tuned so the boundary is narrowest when the smaller
# arm has this many samples (the default Ramp.min_samples).
N_TUNE = 200


@dataclass(frozen=True, slots=True)
class Sequential:
    """An always-valid comparison of candidate with control.

    ``estimate``, ``lower`` and ``upper`` are candidate minus control on the
    test's scale (a difference, or a relative change for ratio and geometric
    means); ``lower``..``upper`` is a (1 - alpha) confidence sequence.
    ``worse_by`` is the one-sided always-valid bound in the worse direction:
    the candidate is worse by at least this much (negative: it may be better).
    ``worse`` is ``p_value <= alpha``, equivalently ``worse_by > margin``.
    Undefined values (too few samples) are None, with ``p_value`` 1.
    """

    estimate: float | None
    lower: float | None
    upper: float | None
    worse_by: float | None
    p_value: float
    worse: bool
    margin: float
    alpha: float
    n_control: int
    n_candidate: int


@dataclass(frozen=True, slots=True)
class SRM:
    """Sample-ratio mismatch: chi-square of observed counts against expected shares."""

    chi2: float
    df: int
    p_value: float
    expected: dict[str, float]  # counts the shares predict, for the variants tested


@dataclass(frozen=True, slots=True)
class FixedTest:
    """A fixed-horizon comparison: candidate minus control, its interval, a two-sided p."""

    estimate: float
    lower: float
    upper: float
    statistic: float  # z or t
    df: float | None  # None for a z-test
    p_value: float
    level: float


# --- sequential ------------------------------------------------------------------


def _one(value: float) -> _sequential.Floats:
    return np.array([value], dtype=np.float64)


def _run(
    d: float,
    v: float,
    n_control: int,
    n_candidate: int,
    margin: float,
    alpha: float,
    n_tune: int,
) -> tuple[float, float, float]:
    """Half-width, worse-direction bound and p for a worse-direction estimate ``d``."""
    dv, vv = _one(d), _one(v)
    tau2 = _sequential.mixing_variance(vv, _one(min(n_control, n_candidate)), alpha, n_tune)
    log_l = float(_sequential.log_evidence(dv, vv, margin, tau2)[0])
    width = float(_sequential.half_width(vv, tau2, alpha)[0])
    bound = float(_sequential.worse_bound(dv, vv, tau2, alpha)[0])
    p_value = 1.0 if log_l <= 0 else math.exp(-log_l)
    return width, bound, p_value


def _inconclusive(margin: float, alpha: float, n_control: int, n_candidate: int) -> Sequential:
    return Sequential(None, None, None, None, 1.0, False, margin, alpha, n_control, n_candidate)


def _check(margin: float, alpha: float) -> None:
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def sequential_proportions(
    x_control: int,
    n_control: int,
    x_candidate: int,
    n_candidate: int,
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
    higher_is_worse: bool = True,
    n_tune: int = N_TUNE,
    min_n: int = MIN_N,
) -> Sequential:
    """Is the candidate's rate worse than control's by more than ``margin`` (absolute)?"""
    _check(margin, alpha)
    if min(n_control, n_candidate) < max(min_n, 1):
        return _inconclusive(margin, alpha, n_control, n_candidate)
    d_arr, v_arr = _sequential.proportions(
        _one(x_control), _one(n_control), _one(x_candidate), _one(n_candidate)
    )
    d, v = float(d_arr[0]), float(v_arr[0])
    sign = 1.0 if higher_is_worse else -1.0
    width, bound, p_value = _run(sign * d, v, n_control, n_candidate, margin, alpha, n_tune)
    return Sequential(
        estimate=d,
        lower=d - width,
        upper=d + width,
        worse_by=bound,
        p_value=p_value,
        worse=p_value <= alpha,
        margin=margin,
        alpha=alpha,
        n_control=n_control,
        n_candidate=n_candidate,
    )


def _moments(values: Values) -> tuple[int, float, float]:
    array = np.asarray(values, dtype=np.float64)
    n = int(array.size)
    if n < 2:
        return n, float(array.mean()) if n else 0.0, 0.0
    return n, float(array.mean()), float(array.var(ddof=1))


def _variance_floor(mean: float) -> float:
    # Identical values (a fixed price, a constant score) would claim zero noise;
    # a floor far below any real spread keeps the arithmetic finite.
    return max((1e-9 * abs(mean)) ** 2, 1e-24)


def sequential_means(
    control: Values,
    candidate: Values,
    *,
    margin: float = 0.0,
    scale: MeanScale = "difference",
    alpha: float = 0.05,
    higher_is_worse: bool = True,
    n_tune: int = N_TUNE,
    min_n: int = MIN_N,
) -> Sequential:
    """Is the candidate's mean worse than control's by more than ``margin``?

    ``scale`` says what is compared and in which unit the margin is:
    ``"difference"`` of means (absolute margin), ``"ratio"`` of means (relative
    margin, 0.2 = 20 %; delta method on log(mean)), or ``"geometric"`` means
    (relative margin; a t-statistic on log values, which must be > 0).
    """
    _check(margin, alpha)
    a = np.asarray(control, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if scale == "geometric":
        if (a <= 0).any() or (b <= 0).any():
            raise ValueError("geometric means need values > 0")
        a, b = np.log(a), np.log(b)
    n_a, m_a, var_a = _moments(a)
    n_b, m_b, var_b = _moments(b)
    if min(n_a, n_b) < max(min_n, 2):
        return _inconclusive(margin, alpha, n_a, n_b)
    var_a, var_b = max(var_a, _variance_floor(m_a)), max(var_b, _variance_floor(m_b))
    if scale == "ratio":
        if m_a <= 0 or m_b <= 0:
            return _inconclusive(margin, alpha, n_a, n_b)
        d = math.log(m_b / m_a)
        v = var_a / (n_a * m_a * m_a) + var_b / (n_b * m_b * m_b)
    else:
        d = m_b - m_a
        v = var_a / n_a + var_b / n_b
    sign = 1.0 if higher_is_worse else -1.0
    if scale == "difference":
        width, bound, p_value = _run(sign * d, v, n_a, n_b, margin, alpha, n_tune)
        return Sequential(
            d, d - width, d + width, bound, p_value, p_value <= alpha, margin, alpha, n_a, n_b
        )
    # Relative scales: test on log, report relative changes (exp(x) - 1).
    log_margin = math.log1p(margin) if higher_is_worse else -math.log1p(-min(margin, 1 - 1e-12))
    width, bound, p_value = _run(sign * d, v, n_a, n_b, log_margin, alpha, n_tune)
    worse_by = math.expm1(bound) if higher_is_worse else -math.expm1(-bound)
    return Sequential(
        estimate=math.expm1(d),
        lower=math.expm1(d - width),
        upper=math.expm1(d + width),
        worse_by=worse_by,
        p_value=p_value,
        worse=p_value <= alpha,
        margin=margin,
        alpha=alpha,
        n_control=n_a,
        n_candidate=n_b,
    )


def sequential_mean_vs(
    values: Values,
    reference: float,
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
    higher_is_worse: bool = True,
    n_tune: int = N_TUNE,
    min_n: int = MIN_N,
) -> Sequential:
    """Is the mean of ``values`` worse than a fixed ``reference`` by more than ``margin``?

    One-sample form, for paired answers already reduced to one number each
    (shadow mode's pairwise preference against 0.5, a tie). The estimate is
    mean - reference; ``n_control`` is 0.
    """
    _check(margin, alpha)
    n, mean, var = _moments(values)
    if n < max(min_n, 2):
        return _inconclusive(margin, alpha, 0, n)
    d = mean - reference
    v = max(var, _variance_floor(mean)) / n
    sign = 1.0 if higher_is_worse else -1.0
    width, bound, p_value = _run(sign * d, v, n, n, margin, alpha, n_tune)
    return Sequential(
        d, d - width, d + width, bound, p_value, p_value <= alpha, margin, alpha, 0, n
    )


def sequential_quantile(
    control: Values,
    candidate: Values,
    *,
    q: float = 0.95,
    margin: float = 0.0,
    alpha: float = 0.05,
    n_tune: int = N_TUNE,
    min_n: int = MIN_N,
) -> Sequential:
    """Is the candidate's ``q`` quantile above (1 + margin) x control's? (higher is worse)

    Exceedance form: with T control's empirical ``q`` quantile, "candidate's
    quantile <= (1 + margin) T" says at most (1 - q) of the candidate's values
    exceed (1 + margin) T. The test compares that share with control's share
    above T (about 1 - q) as two proportions; the binomial variance of the
    control share stands in for the noise in T, which it equals to first
    order when the two distributions differ by a scale. The estimate and
    bounds are in exceedance shares, not milliseconds.
    """
    _check(margin, alpha)
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    a = np.asarray(control, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if min(a.size, b.size) < max(min_n, 1):
        return _inconclusive(margin, alpha, int(a.size), int(b.size))
    threshold = float(np.quantile(a, q))
    x_a = int(np.count_nonzero(a > threshold))
    x_b = int(np.count_nonzero(b > (1 + margin) * threshold))
    result = sequential_proportions(
        x_a, int(a.size), x_b, int(b.size), margin=0.0, alpha=alpha, n_tune=n_tune, min_n=min_n
    )
    return Sequential(
        result.estimate,
        result.lower,
        result.upper,
        result.worse_by,
        result.p_value,
        result.worse,
        margin,
        alpha,
        result.n_control,
        result.n_candidate,
    )


# --- sample-ratio mismatch ----------------------------------------------------------


def srm(observed: Mapping[str, int], shares: Mapping[str, float]) -> SRM:
    """Chi-square goodness-of-fit of ``observed`` counts against ``shares`` (any scale).

    Variants with a zero share are left out (nothing is expected of them, and
    a few stragglers from replicas not yet on the new split are no mismatch).
    With fewer than two variants left, or an expected count under 5 (the
    chi-square approximation's usual floor), there is nothing to test: p = 1.
    """
    tested = {name: share for name, share in shares.items() if share > 0}
    total_share = sum(tested.values())
    total = sum(observed.get(name, 0) for name in tested)
    expected = {name: total * share / total_share for name, share in tested.items()}
    if len(tested) < 2 or min(expected.values()) < 5:
        return SRM(0.0, max(len(tested) - 1, 0), 1.0, expected)
    chi2 = sum((observed.get(name, 0) - e) ** 2 / e for name, e in expected.items())
    df = len(tested) - 1
    return SRM(chi2, df, _dist.chi2_sf(chi2, df), expected)


# --- fixed horizon -------------------------------------------------------------------


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return _dist.norm_ppf(0.5 + level / 2)


def proportion_ci(x: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a rate x / n (sound near 0 and 1, unlike x/n ± z·se)."""
    if n <= 0:
        raise ValueError("a proportion needs n > 0")
    z = _z(level)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(values: Values, *, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for a mean."""
    n, mean, var = _moments(values)
    if n < 2:
        raise ValueError("a mean's interval needs at least 2 values")
    half = _dist.t_ppf(0.5 + level / 2, n - 1) * math.sqrt(var / n)
    return mean - half, mean + half


def two_proportion_ztest(
    x_control: int, n_control: int, x_candidate: int, n_candidate: int, *, level: float = 0.95
) -> FixedTest:
    """Two-sided z-test of equal rates (pooled se) with a Wald interval for the difference."""
    if n_control <= 0 or n_candidate <= 0:
        raise ValueError("both variants need n > 0")
    p_a, p_b = x_control / n_control, x_candidate / n_candidate
    d = p_b - p_a
    pooled = (x_control + x_candidate) / (n_control + n_candidate)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_candidate))
    se = math.sqrt(p_a * (1 - p_a) / n_control + p_b * (1 - p_b) / n_candidate)
    z = d / se0 if se0 > 0 else 0.0
    half = _z(level) * se
    return FixedTest(d, d - half, d + half, z, None, min(1.0, 2 * _dist.norm_sf(abs(z))), level)


def welch_ttest(control: Values, candidate: Values, *, level: float = 0.95) -> FixedTest:
    """Welch's unequal-variance t-test of equal means, with the Welch interval."""
    n_a, m_a, var_a = _moments(control)
    n_b, m_b, var_b = _moments(candidate)
    if min(n_a, n_b) < 2:
        raise ValueError("Welch's test needs at least 2 values per variant")
    d = m_b - m_a
    ua, ub = var_a / n_a, var_b / n_b
    se = math.sqrt(ua + ub)
    if se == 0:
        p_value = 1.0 if d == 0 else 0.0
        stat = 0.0 if d == 0 else math.copysign(math.inf, d)
        return FixedTest(d, d, d, stat, None, p_value, level)
    df = (ua + ub) ** 2 / (ua * ua / (n_a - 1) + ub * ub / (n_b - 1))
    t = d / se
    half = _dist.t_ppf(0.5 + level / 2, df) * se
    return FixedTest(d, d - half, d + half, t, df, min(1.0, 2 * _dist.t_sf(abs(t), df)), level)


def chance_to_beat(
    x_control: int,
    n_control: int,
    x_candidate: int,
    n_candidate: int,
    *,
    higher_is_better: bool = True,
    draws: int = 200_000,
    seed: int = 0,
) -> float:
    """Posterior P(candidate's rate beats control's), Beta(1, 1) priors.

    Monte Carlo from a fixed-seed generator, so the same counts always give
    the same answer; with 200,000 draws its standard error is below 0.0012.
    """
    rng = np.random.default_rng(seed)
    a = rng.beta(x_control + 1, n_control - x_control + 1, draws)
    b = rng.beta(x_candidate + 1, n_candidate - x_candidate + 1, draws)
    wins = b > a if higher_is_better else b < a
    return float(np.mean(wins))
