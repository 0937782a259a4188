"""The normal-mixture sequential test, vectorised over numpy arrays.

An estimate ``d`` of (candidate - control), in the direction where larger is
worse, with variance ``v``. Under H0 (``true difference <= margin``) the
one-sided mixture likelihood ratio

    L = 2 * Phi(s / sqrt(a)) * exp(s**2 / (2 a)) / sqrt(1 + tau2 / v),
    s = (d - margin) / v,   a = 1 / v + 1 / tau2,

is the likelihood ratio of N(margin + delta, v) against N(margin, v) averaged
over delta ~ half-normal(tau2), so it is a nonnegative supermartingale in
information time 1/v (Johari, Pekelis, Walsh 2017; Howard et al. 2021).
Ville's inequality then bounds P(L ever >= 1/alpha) by alpha, at every look.
``stats`` wraps these for scalars; the simulation tests call them on arrays.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

_LOG2 = math.log(2.0)
# Numerical Recipes' erfcc: erfc(z) = t * exp(-z**2 + sum(c[k] * t**k)), t = 1 / (1 + z / 2).
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
         0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)  # fmt: skip


def tuned_ratio(alpha: float) -> float:
    """The tau2 / v that makes the two-sided boundary narrowest at that v.

    Minimises (1 + 1/u) * (2 log(1/alpha) + log(1 + u)) over u by golden
    section on log u; about 8 for alpha = 0.05.
    """
    two_l = 2 * math.log(1 / alpha)

    def width(log_u: float) -> float:
        u = math.exp(log_u)
        return (1 + 1 / u) * (two_l + math.log1p(u))

    lo, hi = math.log(1e-3), math.log(1e5)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        m1 = hi - ratio * (hi - lo)
        m2 = lo + ratio * (hi - lo)
        if width(m1) < width(m2):
            hi = m2
        else:
            lo = m1
    return math.exp((lo + hi) / 2)


def mixing_variance(v: Floats, n_small: Floats, alpha: float, n_tune: float) -> Floats:
    """tau2: tuned so the test is sharpest when the smaller arm has ``n_tune`` samples.

    At a fixed allocation ratio v scales as 1/n, so the variance then is
    v * n_small / n_tune.
    """
    return tuned_ratio(alpha) * v * n_small / n_tune


def log_ndtr(x: Floats) -> Floats:
    """log Phi(x) without underflow (Numerical Recipes' erfc, relative error < 1.2e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(t)
    for coefficient in reversed(_ERFC):
        poly = poly * t + coefficient
    log_erfc = np.log(t) - z * z + poly  # log erfc(|x| / sqrt 2)
    lower = log_erfc - _LOG2  # log Phi(-|x|)
    upper = np.log1p(-np.exp(lower))  # log Phi(|x|)
    return np.where(x < 0, lower, upper)


def log_evidence(d: Floats, v: Floats, margin: float | Floats, tau2: Floats) -> Floats:
    """log L, the one-sided mixture likelihood ratio against H0: difference <= margin."""
    s = (d - margin) / v
    a = 1.0 / v + 1.0 / tau2
    x = s / np.sqrt(a)
    return _LOG2 + log_ndtr(x) + x * x / 2 - 0.5 * np.log1p(tau2 / v)


def half_width(v: Floats, tau2: Floats, alpha: float) -> Floats:
    """Half-width of the two-sided always-valid (1 - alpha) confidence sequence."""
    return np.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log1p(tau2 / v)))


def worse_bound(d: Floats, v: Floats, tau2: Floats, alpha: float) -> Floats:
    """The largest margin the test rejects: the candidate is worse by at least this.

    log L falls as the margin rises, and the bound lies in [d - half_width, d],
    so sixty bisection steps pin it to float precision.
    """
    target = math.log(1 / alpha)
    lo = d - half_width(v, tau2, alpha)
    hi = np.array(d, dtype=np.float64, copy=True)
    for _ in range(60):
        mid = (lo + hi) / 2
        rejected = log_evidence(d, v, mid, tau2) >= target
        lo = np.where(rejected, mid, lo)
        hi = np.where(rejected, hi, mid)
    return np.asarray(lo, dtype=np.float64)


def proportions(x_a: Floats, n_a: Floats, x_b: Floats, n_b: Floats) -> tuple[Floats, Floats]:
    """Difference b - a of two proportions and its variance.

    The variance plugs in Laplace-smoothed rates (x + 1) / (n + 2): with few
    events a raw rate of 0 would claim no noise at all and let a handful of
    errors look decisive.
    """
    pa_s = (x_a + 1) / (n_a + 2)
    pb_s = (x_b + 1) / (n_b + 2)
    v = pa_s * (1 - pa_s) / n_a + pb_s * (1 - pb_s) / n_b
    return x_b / n_b - x_a / n_a, v
