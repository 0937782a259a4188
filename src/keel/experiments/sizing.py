"""How many samples per variant a fixed-horizon test needs to detect an effect.

The classic normal-approximation formulas (Fleiss, for proportions without
continuity correction; the two-sample z formula for means). They size a
fixed split read once; a sequential guard, valid at every look, needs more
(see docs/experiments-stats.md).
"""

from __future__ import annotations

import math

from keel.experiments._dist import norm_ppf


def _z_values(alpha: float, power: float, two_sided: bool) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    z_alpha = norm_ppf(1 - alpha / 2) if two_sided else norm_ppf(1 - alpha)
    return z_alpha, norm_ppf(power)


def sample_size(
    baseline_rate: float,
    mde_points: float,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
) -> int:
    """Samples per variant to detect a rate moving from ``baseline_rate`` by ``mde_points``.

    Both are fractions: a 5 % baseline and a 2-point effect are 0.05 and
    0.02 (the effect may be negative). n = (z_a sqrt(2 pbar qbar) +
    z_b sqrt(p1 q1 + p2 q2))**2 / mde**2, rounded up.
    """
    p1 = baseline_rate
    p2 = baseline_rate + mde_points
    if not 0 < p1 < 1:
        raise ValueError(f"baseline_rate must be in (0, 1), got {p1}")
    if mde_points == 0 or not 0 < p2 < 1:
        raise ValueError(
            f"baseline_rate + mde_points must be in (0, 1) and differ from the baseline, got {p2}"
            " (rates are fractions: 2 points is 0.02)"
        )
    z_alpha, z_beta = _z_values(alpha, power, two_sided)
    pbar = (p1 + p2) / 2
    root = z_alpha * math.sqrt(2 * pbar * (1 - pbar)) + z_beta * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil(root * root / (mde_points * mde_points) - 1e-9)


def sample_size_means(
    std: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
) -> int:
    """Samples per variant to detect a change of ``mde`` in a mean with standard deviation ``std``.

    n = 2 (z_a + z_b)**2 std**2 / mde**2, rounded up; ``mde`` is in the
    metric's own unit (ms, USD, score points).
    """
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    if mde == 0:
        raise ValueError("mde must not be 0")
    z_alpha, z_beta = _z_values(alpha, power, two_sided)
    return math.ceil(2 * (z_alpha + z_beta) ** 2 * std * std / (mde * mde) - 1e-9)
