"""Monthly projection maths and its validation."""

from __future__ import annotations

import math

import pytest

from keel.costs import SECONDS_PER_MONTH, MixEntry, project_monthly
from keel.errors import InvalidRequest


def test_scales_observed_cost_per_request_to_a_30_day_month() -> None:
    assert SECONDS_PER_MONTH == 2_592_000
    projection = project_monthly(
        [MixEntry("small", requests=300, cost_usd=0.3), MixEntry("large", 100, 1.0)], qps=2
    )
    month = 2 * SECONDS_PER_MONTH
    assert projection.requests_per_month == month
    large, small = projection.models  # dearest first
    assert (large.name, small.name) == ("large", "small")
    assert small.share == 0.75 and large.share == 0.25
    assert small.cost_per_request_usd == pytest.approx(0.001)
    assert large.cost_per_request_usd == pytest.approx(0.01)
    assert small.requests_per_month == pytest.approx(0.75 * month)
    assert small.monthly_usd == pytest.approx(0.75 * month * 0.001)
    assert large.monthly_usd == pytest.approx(0.25 * month * 0.01)
    assert projection.monthly_usd == pytest.approx(1.3 / 400 * month)
    assert projection.unknown_share == 0.0


def test_unknown_costs_are_reported_not_guessed() -> None:
    projection = project_monthly(
        [
            MixEntry("priced", 80, 0.8, unknown_cost_requests=20),
            MixEntry("unpriced", 100, 0.0, unknown_cost_requests=100),
        ],
        qps=1,
    )
    assert projection.unknown_share == pytest.approx(120 / 180)
    priced, unpriced = projection.models
    # Mean over priced requests only: 0.8 over 60.
    assert priced.cost_per_request_usd == pytest.approx(0.8 / 60)
    assert priced.unknown_share == 0.25
    assert priced.monthly_usd == pytest.approx(0.8 / 180 * SECONDS_PER_MONTH)
    assert unpriced.cost_per_request_usd is None
    assert unpriced.monthly_usd == 0.0
    assert unpriced.unknown_share == 1.0


def test_same_name_entries_are_merged() -> None:
    merged = project_monthly([MixEntry("m", 10, 0.1), MixEntry("m", 30, 0.3, 10)], qps=1)
    (only,) = merged.models
    assert only.share == 1.0
    assert only.cost_per_request_usd == pytest.approx(0.4 / 30)
    assert only.unknown_share == 0.25


@pytest.mark.parametrize("qps", [0, -1, math.nan, math.inf])
def test_qps_must_be_positive(qps: float) -> None:
    with pytest.raises(InvalidRequest) as caught:
        project_monthly([MixEntry("m", 1, 0.1)], qps=qps)
    assert caught.value.param == "qps"


@pytest.mark.parametrize(
    "mix",
    [
        [],
        [MixEntry("m", 0, 0.0)],
        [MixEntry("m", -1, 0.0)],
        [MixEntry("m", 5, 0.1, unknown_cost_requests=6)],
        [MixEntry("m", 5, -0.1)],
        [MixEntry("m", 5, math.nan)],
    ],
)
def test_mix_must_be_a_real_observation(mix: list[MixEntry]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        project_monthly(mix, qps=1)
    assert caught.value.param == "mix"
