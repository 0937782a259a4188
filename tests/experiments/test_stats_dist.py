"""The hand-written distribution functions against known values (scipy 1.17's, to 1e-9)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keel.experiments import _dist, _sequential


@pytest.mark.parametrize(
    ("x", "df", "expected"),
    [
        (3.84, 1, 0.05004352124870519),
        (10.0, 3, 0.01856613546304325),
        (20.0, 5, 0.0012497305630313773),
        (0.01, 4, 0.9999875415886458),
        (150.0, 2, 2.678636961808087e-33),
        (16.0, 1, 6.334248366623988e-05),
        (8.0, 2, 0.018315638888734182),
    ],
)
def test_chi2_sf(x: float, df: int, expected: float) -> None:
    assert _dist.chi2_sf(x, df) == pytest.approx(expected, rel=1e-9)


def test_chi2_sf_closed_forms() -> None:
    # df = 2 is exp(-x/2); df = 1 is erfc(sqrt(x/2)).
    for x in (0.1, 1.0, 7.5, 40.0):
        assert _dist.chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
        assert _dist.chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9)
    assert _dist.chi2_sf(0.0, 3) == 1.0
    assert _dist.gammainc_q(3.5, 2.0) == pytest.approx(0.779777408475716, rel=1e-12)


@pytest.mark.parametrize(
    ("t", "df", "cdf"),
    [
        (2.0, 5, 0.9490302605850708),
        (-1.5, 2.5, 0.12391822654314809),
        (-3.0, 1, 0.10241638234956672),
        (-0.7, 37.3, 0.2441352561095004),
        (-6.0, 200, 4.557560174405173e-09),
        (0.0, 7, 0.5),
    ],
)
def test_t_cdf(t: float, df: float, cdf: float) -> None:
    assert _dist.t_cdf(t, df) == pytest.approx(cdf, rel=1e-9)
    assert _dist.t_sf(-t, df) == pytest.approx(cdf, rel=1e-9)


def test_t_cdf_closed_form_for_one_degree_of_freedom() -> None:
    # t with 1 df is Cauchy: 1/2 + atan(t)/pi.
    for t in (-20.0, -1.0, 0.3, 4.0):
        assert _dist.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-10)


def test_t_tends_to_normal() -> None:
    assert _dist.t_sf(1.96, 1e7) == pytest.approx(_dist.norm_sf(1.96), rel=1e-6)
    assert _dist.t_sf(1.96, math.inf) == _dist.norm_sf(1.96)


def test_quantiles() -> None:
    assert _dist.norm_ppf(0.975) == pytest.approx(1.959963984540054, rel=1e-12)
    assert _dist.norm_ppf(1e-10) == pytest.approx(-6.361340902404056, rel=1e-10)
    assert _dist.norm_ppf(0.3) == pytest.approx(-0.5244005127080409, rel=1e-12)
    assert _dist.t_ppf(0.975, 10) == pytest.approx(2.228138851986274, rel=1e-9)
    for p in (0.01, 0.5, 0.9, 0.999):
        assert _dist.t_cdf(_dist.t_ppf(p, 3.3), 3.3) == pytest.approx(p, rel=1e-9)
    with pytest.raises(ValueError):
        _dist.norm_ppf(1.0)


def test_betainc() -> None:
    assert _dist.betainc(2, 3, 0.4) == pytest.approx(0.5248, rel=1e-12)  # a polynomial
    assert _dist.betainc(2.5, 4.0, 0.3) == pytest.approx(0.3521975859067672, rel=1e-10)
    assert _dist.betainc(100, 200, 0.33) == pytest.approx(0.45661816333399713, rel=1e-9)
    x = 0.3
    arcsine = 2 / math.pi * math.asin(math.sqrt(x))
    assert _dist.betainc(0.5, 0.5, x) == pytest.approx(arcsine, rel=1e-12)
    assert (_dist.betainc(1, 1, 0.0), _dist.betainc(1, 1, 1.0)) == (0.0, 1.0)


def test_log_ndtr_matches_math_far_into_the_tail() -> None:
    x = np.array([-35.0, -10.0, -2.0, 0.0, 1.5, 8.0])
    exact = np.array([math.log(_dist.norm_cdf(v)) for v in x])
    assert np.allclose(_sequential.log_ndtr(x), exact, rtol=2e-7, atol=1e-12)
