"""The controller's decisions on scripted metric streams: every branch, and whole ramps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from keel.experiments.decide import Decision, VariantMetrics, decide
from keel.experiments.spec import Experiment, Guard

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GUARDS: list[dict[str, Any]] = [
    {"metric": "error_rate", "max_increase": 0.02},
    {"metric": "p95_latency_ms", "max_increase": 0.2},
    {"metric": "cost_per_request", "max_increase": 0.1},
]


def experiment(**fields: Any) -> Experiment:
    base: dict[str, Any] = {
        "name": "rag-v3",
        "prompt": "rag",
        "unit": "request",
        "variants": [
            {"name": "control", "control": True, "prompt_version": "1.0.0"},
            {"name": "v3", "prompt_version": "3.0.0"},
        ],
        "guards": GUARDS,
        "ramp": {"steps": [1, 5, 20, 50, 100], "hold_s": 600, "min_samples": 200},
    }
    base.update(fields)
    return Experiment.model_validate(base)


def traffic(
    n: int,
    *,
    seed: int = 0,
    error_rate: float = 0.01,
    slowdown: float = 1.0,
    cost: float = 0.002,
    thumbs_down: float = 0.1,
    flags: float = 0.01,
    judge: float = 0.8,
    units: int | None = None,
) -> VariantMetrics:
    """``n`` requests of synthetic traffic, every signal present."""
    rng = np.random.default_rng(seed)
    rated = n // 5
    judged = max(n // 4, 0)
    return VariantMetrics(
        n=n,
        errors=int(rng.binomial(n, error_rate)),
        latencies_ms=tuple(rng.lognormal(6.5, 0.5, n) * slowdown),
        ttft_ms=tuple(rng.lognormal(5.0, 0.5, n) * slowdown),
        costs_usd=tuple(rng.gamma(4.0, cost / 4, n)),
        cost_unknown=0,
        rated=rated,
        thumbs_down=int(rng.binomial(rated, thumbs_down)),
        guardrail_flags=int(rng.binomial(n, flags)),
        judge_scores=tuple(np.clip(rng.normal(judge, 0.15, judged), 0, 1)),
        units=units,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(exp: Experiment, step: int, held_s: float, metrics: dict[str, VariantMetrics]) -> Decision:
    decision = decide(exp, step, T0, at(held_s), metrics)
    json.dumps(decision.numbers, allow_nan=False)  # the audited event can carry it as is
    return decision


# --- rollback ---------------------------------------------------------------------------


def test_sample_ratio_mismatch_rolls_back() -> None:
    # At the 5 % step the candidate got 2 % of the traffic.
    metrics = {"control": traffic(9800), "v3": traffic(200, seed=1)}
    decision = run(experiment(), 1, 900, metrics)
    assert decision.action == "rollback"
    assert "the split itself is broken" in decision.reasons[0]
    srm = decision.numbers["srm"]
    assert srm["p_value"] < 0.001 and srm["counted"] == "requests"
    assert srm["expected"] == {"v3": pytest.approx(500.0), "control": pytest.approx(9500.0)}


def test_srm_counts_units_when_the_unit_is_a_user() -> None:
    exp = experiment(unit="user")
    # Requests are lopsided (one heavy user), units are fair: no mismatch.
    metrics = {
        "control": traffic(9000, units=4750),
        "v3": traffic(1000, seed=1, units=250),
    }
    decision = run(exp, 1, 900, metrics)
    assert decision.numbers["srm"]["counted"] == "units"
    assert decision.numbers["srm"]["observed"] == {"v3": 250, "control": 4750}
    assert decision.action == "advance"


@pytest.mark.parametrize(
    ("metric", "allowance", "bad"),
    [
        ("error_rate", {"max_increase": 0.02}, {"error_rate": 0.08}),
        ("guardrail_flag_rate", {"max_increase": 0.01}, {"flags": 0.06}),
        ("thumbs_down_rate", {"max_increase": 0.05}, {"thumbs_down": 0.3}),
        ("judge_score", {"max_decrease": 0.05}, {"judge": 0.6}),
        ("p95_latency_ms", {"max_increase": 0.2}, {"slowdown": 1.6}),
        ("ttft_ms", {"max_increase": 0.2}, {"slowdown": 1.6}),
        ("cost_per_request", {"max_increase": 0.1}, {"cost": 0.003}),
    ],
)
def test_each_guard_rolls_back_a_real_regression_and_passes_an_equal_candidate(
    metric: str, allowance: dict[str, float], bad: dict[str, float]
) -> None:
    exp = experiment(guards=[{"metric": metric, **allowance}])
    equal = run(exp, 2, 900, {"control": traffic(8000), "v3": traffic(2000, seed=1)})
    assert equal.action == "advance", equal.reasons
    assert equal.numbers["guards"][0]["status"] == "ok"
    worse = run(exp, 2, 900, {"control": traffic(8000), "v3": traffic(2000, seed=1, **bad)})
    assert worse.action == "rollback"
    (reason,) = worse.reasons
    assert reason.startswith(f"guard {metric} failed: v3 ")
    row = worse.numbers["guards"][0]
    assert row["status"] == "failed" and row["p_value"] <= worse.numbers["alpha_per_test"]
    if metric == "p95_latency_ms":  # tested as shares of requests over a threshold
        assert row["scale"] == "exceedance" and row["worse_by"] > 0
        assert "slower than 1.2 x control's p95" in reason
    else:
        assert row["worse_by"] > row["allowance"]


def test_rollback_wins_over_hold() -> None:
    # Ten seconds in, far short of min_samples, but errors are through the roof.
    metrics = {"control": traffic(3000), "v3": traffic(150, seed=1, error_rate=0.4)}
    decision = run(experiment(), 1, 10, metrics)
    assert decision.action == "rollback"
    assert [r.split(":")[0] for r in decision.reasons] == ["guard error_rate failed"]


def test_every_failing_guard_is_named() -> None:
    bad = traffic(2000, seed=1, error_rate=0.1, slowdown=2.0)
    decision = run(experiment(), 2, 900, {"control": traffic(8000), "v3": bad})
    assert decision.action == "rollback"
    assert {r.split(":")[0] for r in decision.reasons} == {
        "guard error_rate failed",
        "guard p95_latency_ms failed",
    }


# --- hold, advance, complete ------------------------------------------------------------


def test_hold_until_the_hold_time_has_passed() -> None:
    metrics = {"control": traffic(9500), "v3": traffic(500, seed=1)}
    decision = run(experiment(), 1, 120, metrics)
    assert decision.action == "hold"
    assert decision.reasons == ("holding step 2 of 5 (v3 5 %, control 95 %): 120 s of 600 s",)


def test_hold_until_every_variant_has_its_samples() -> None:
    metrics = {"control": traffic(9900), "v3": traffic(99, seed=1)}
    decision = run(experiment(), 0, 900, metrics)
    assert decision.action == "hold"
    assert decision.reasons == ("waiting for samples: v3 99/200",)


def test_hold_says_everything_it_waits_for() -> None:
    decision = run(experiment(), 0, 30, {"control": traffic(150), "v3": traffic(2, seed=1)})
    assert decision.action == "hold"
    assert len(decision.reasons) == 2
    assert decision.reasons[1] == "waiting for samples: v3 2/200, control 150/200"


def test_advance_when_held_sampled_and_healthy() -> None:
    metrics = {"control": traffic(9500), "v3": traffic(500, seed=1)}
    decision = run(experiment(), 1, 600, metrics)
    assert decision.action == "advance"
    assert decision.reasons[0].endswith("no guard failed; next 20 %")
    step = decision.numbers["step"]
    assert step["index"] == 1 and step["last"] is False and step["held_s"] == 600


def test_complete_at_the_last_step_needs_no_control_traffic() -> None:
    metrics = {"control": traffic(3), "v3": traffic(5000, seed=1)}  # stragglers from old split
    decision = run(experiment(), 4, 700, metrics)
    assert decision.action == "complete"
    assert decision.numbers["srm"]["df"] == 0
    assert {row["status"] for row in decision.numbers["guards"]} == {"inconclusive"}


def test_missing_variants_count_as_no_traffic() -> None:
    decision = run(experiment(), 0, 900, {"control": traffic(500)})
    assert decision.action == "hold"
    assert decision.reasons == ("waiting for samples: v3 0/200",)


def test_unknown_variants_are_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        decide(experiment(), 0, T0, at(1), {"v4": VariantMetrics()})


# --- fixed splits and shadow mode -------------------------------------------------------

SPLIT = {"ramp": None, "split": {"control": 50, "v3": 50}}


def test_a_fixed_split_never_advances() -> None:
    metrics = {"control": traffic(50_000), "v3": traffic(50_000, seed=1)}
    decision = run(experiment(**SPLIT), 0, 10**6, metrics)
    assert decision.action == "hold"
    assert decision.reasons == ("a fixed split never advances; no guard has failed",)
    assert decision.numbers["step"]["index"] is None


def test_a_fixed_split_still_rolls_back() -> None:
    metrics = {"control": traffic(5000), "v3": traffic(5000, seed=1, error_rate=0.1)}
    assert run(experiment(**SPLIT), 0, 60, metrics).action == "rollback"
    lopsided = {"control": traffic(5300), "v3": traffic(4700, seed=1)}
    assert run(experiment(**SPLIT), 0, 60, lopsided).action == "rollback"


def test_shadow_mode_judges_pairwise_preferences_and_skips_srm() -> None:
    exp = experiment(ramp=None, shadow={}, guards=[{"metric": "judge_score", "max_decrease": 0.05}])
    # The candidate answered a tenth of control's requests (the mirrored share).
    ties = VariantMetrics(n=1000, judge_scores=tuple([0.5] * 300 + [0.4, 0.6] * 100))
    calm = run(exp, 0, 60, {"control": traffic(10_000), "v3": ties})
    assert calm.action == "hold" and calm.numbers["srm"] is None
    assert calm.reasons == ("shadow mode never advances; no guard has failed",)
    loses = VariantMetrics(n=1000, judge_scores=tuple([0.0] * 200 + [0.5] * 100 + [1.0] * 50))
    decision = run(exp, 0, 60, {"control": traffic(10_000), "v3": loses})
    assert decision.action == "rollback"
    assert decision.numbers["guards"][0]["estimate"] == pytest.approx(0.2857 - 0.5, abs=1e-3)


# --- alpha and the numbers ---------------------------------------------------------------


def test_alpha_is_split_over_guards_candidates_and_analysed_steps() -> None:
    decision = run(experiment(), 0, 1, {})
    # 3 guards x 1 candidate x 4 steps below 100 %.
    assert decision.numbers["alpha_per_test"] == pytest.approx(0.05 / 12)
    split = run(experiment(**SPLIT, alpha=0.1), 0, 1, {})
    assert split.numbers["alpha_per_test"] == pytest.approx(0.1 / 3)


def test_numbers_carry_every_variant_and_guard() -> None:
    decision = run(experiment(), 1, 900, {"control": traffic(9500), "v3": traffic(500, seed=1)})
    numbers = decision.numbers
    assert set(numbers["variants"]) == {"control", "v3"}
    v3 = numbers["variants"]["v3"]
    assert v3["n"] == 500 and 0 <= v3["error_rate"] < 0.05
    assert v3["p50_latency_ms"] < v3["p95_latency_ms"]
    assert [row["metric"] for row in numbers["guards"]] == [g["metric"] for g in GUARDS]
    row = numbers["guards"][1]
    assert row["scale"] == "exceedance" and row["allowance"] == 0.2
    assert row["threshold_ms"] == pytest.approx(1.2 * row["control_value"])
    assert row["control_value"] == pytest.approx(numbers["variants"]["control"]["p95_latency_ms"])
    empty = run(experiment(), 0, 1, {})
    assert empty.numbers["variants"]["v3"]["p95_latency_ms"] is None


# --- whole ramps --------------------------------------------------------------------------


def stream(exp: Experiment, seed: int, **candidate: float) -> tuple[str, int, float]:
    """Drive a ramp at 100 requests per second, analysed every 30 s, until it ends.

    Returns the final action, the step it ended on and the seconds it took.
    """
    assert exp.ramp is not None
    rng = np.random.default_rng(seed)
    step, started, clock = 0, 0.0, 0.0
    while True:
        clock += exp.ramp.interval_s
        share = exp.ramp.steps[step] / 100
        window = int((clock - started) * 100)
        n_v3 = int(rng.binomial(window, share))
        metrics = {
            "control": traffic(window - n_v3, seed=int(rng.integers(1 << 30))),
            "v3": traffic(n_v3, seed=int(rng.integers(1 << 30)), **candidate),
        }
        decision = decide(exp, step, at(started), at(clock), metrics)
        if decision.action in ("rollback", "complete"):
            return decision.action, step, clock
        if decision.action == "advance":
            step, started = step + 1, clock


def test_an_equal_candidate_is_ramped_to_completion() -> None:
    exp = experiment(ramp={"steps": [5, 20, 50, 100], "hold_s": 300, "min_samples": 200})
    action, step, clock = stream(exp, seed=10)
    assert (action, step) == ("complete", 3)
    assert clock == pytest.approx(4 * 300, abs=4 * 30)


def test_a_regressed_candidate_is_rolled_back_early() -> None:
    exp = experiment(ramp={"steps": [5, 20, 50, 100], "hold_s": 300, "min_samples": 200})
    action, step, clock = stream(exp, seed=11, error_rate=0.08, slowdown=1.3)
    assert action == "rollback"
    assert step <= 1 and clock <= 600


# --- the spec's guard directions -----------------------------------------------------------


def test_a_guard_allowance_on_the_harmless_side_is_refused() -> None:
    with pytest.raises(ValidationError, match="use max_increase"):
        Guard(metric="error_rate", max_decrease=0.1)
    with pytest.raises(ValidationError, match="use max_decrease"):
        Guard(metric="judge_score", max_increase=0.1)
