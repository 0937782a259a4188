"""Sample sizes for a fixed-horizon test, against published values and by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from keel.experiments.sizing import sample_size, sample_size_means
from keel.experiments.stats import two_proportion_ztest


def test_proportions_match_the_textbook() -> None:
    # 10 % baseline, 2 points, alpha 0.05 two-sided, power 0.8: 3,841 per variant
    # (Fleiss without continuity correction; Evan Miller's calculator agrees).
    assert sample_size(0.10, 0.02) == 3841
    assert sample_size(0.10, -0.02) < sample_size(0.10, 0.02)  # nearer 0, less variance
    assert sample_size(0.10, 0.02, two_sided=False) < 3841
    assert sample_size(0.10, 0.02, power=0.9) > 3841
    assert sample_size(0.10, 0.04) < 3841 / 3


def test_means_match_the_textbook() -> None:
    # One standard deviation over two: 2 (1.96 + 0.8416)**2 / 0.25 = 62.8 -> 63.
    assert sample_size_means(1.0, 0.5) == 63
    assert sample_size_means(200.0, 100.0) == 63  # only the ratio matters
    assert sample_size_means(1.0, 0.5, alpha=0.01) > 63


def test_the_size_gives_the_promised_power() -> None:
    n = sample_size(0.05, 0.02)
    rng = np.random.default_rng(9)
    runs = 2000
    x_a = rng.binomial(n, 0.05, runs)
    x_b = rng.binomial(n, 0.07, runs)
    pairs = zip(x_a.tolist(), x_b.tolist(), strict=True)
    hits = [two_proportion_ztest(a, n, b, n).p_value < 0.05 for a, b in pairs]
    assert np.mean(hits) == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize(
    ("baseline", "mde", "message"),
    [(0.0, 0.02, "baseline_rate"), (0.5, 2.0, "fractions"), (0.5, 0.0, "differ")],
)
def test_bad_inputs_are_refused(baseline: float, mde: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_size(baseline, mde)


def test_bad_means_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="std"):
        sample_size_means(0.0, 1.0)
    with pytest.raises(ValueError, match="power"):
        sample_size_means(1.0, 1.0, power=1.0)
