"""The gate: an equal candidate passes, a regressed one fails, noise does not fail.

The documented sample size (docs/evals.md): with 200 examples, two runs of
the same system whose answers vary from call to call (each example passes
with its own probability, drawn independently on each side) fail the gate
in about 2 runs in 100 (under alpha / 2); a real 10-point drop fails it in
about 2 runs in 3 (and in 97 in 100 at 500 examples).
"""

from __future__ import annotations

import numpy as np
import pytest

from keel.evals._results import ExampleResult, RunResult, ScorerOutcome
from keel.evals.compare import compare, mcnemar
from keel.evals.gate import apply_gate, holm_adjust, regressed
from keel.evals.suite import GateConfig

GATE = GateConfig()


def _run(
    passes: list[bool] | np.ndarray, *, scorer: str = "exact", tokens: float = 10
) -> RunResult:
    rows = tuple(
        ExampleResult(
            id=f"ex{i:04d}",
            tags=("even",) if i % 2 == 0 else ("odd",),
            scores={scorer: ScorerOutcome(1.0 if ok else 0.0, bool(ok))},
            input_tokens=tokens,
            output_tokens=0,
            latency_ms=10.0,
        )
        for i, ok in enumerate(passes)
    )
    return RunResult("s", "t", None, None, None, "h", (scorer,), rows)


def _verdict(candidate: RunResult, baseline: RunResult | None, gate: GateConfig = GATE):
    return apply_gate(
        compare(candidate, baseline, resamples=200), gate, baseline_present=baseline is not None
    )


def test_an_equal_candidate_passes() -> None:
    passes = [i % 5 != 0 for i in range(200)]
    verdict = _verdict(_run(passes), _run(passes))
    assert verdict.passed and not verdict.failures
    assert [c.kind for c in verdict.checks] == ["regression"]


def test_a_regressed_candidate_fails() -> None:
    base = [i % 10 != 0 for i in range(200)]  # 90%
    cand = [ok and i % 10 not in (1, 2) for i, ok in enumerate(base)]  # 70%
    verdict = _verdict(_run(cand), _run(base))
    assert not verdict.passed
    assert "exact: pass rate 90.0% → 70.0% (-20.0 points; 40 regressed" in verdict.failures[0]


def test_a_drop_within_the_allowance_passes_even_when_significant() -> None:
    base = [True] * 1000
    cand = [i >= 15 for i in range(1000)]  # -1.5 points, p ≈ 6e-5
    verdict = _verdict(_run(cand), _run(base))
    assert verdict.passed


def test_a_large_drop_on_few_examples_is_not_significant() -> None:
    base = [True] * 8
    cand = [True] * 6 + [False] * 2  # -25 points, p = 0.5
    assert _verdict(_run(cand), _run(base)).passed


def test_floors() -> None:
    gate = GateConfig(floors={"exact": 0.8})
    ok = _verdict(_run([i % 10 != 0 for i in range(50)]), None, gate)
    assert ok.passed
    low = _verdict(_run([i % 4 != 0 for i in range(50)]), None, gate)
    assert not low.passed
    assert low.failures == ("exact: mean 0.740 is below the floor 0.800",)
    assert any("no baseline" in w for w in low.warnings)


def test_token_inflation_warns_but_does_not_fail() -> None:
    verdict = _verdict(_run([True] * 200, tokens=115), _run([True] * 200, tokens=100))
    assert verdict.passed
    assert verdict.warnings == ("tokens per call up 15.0% against the baseline (warns above 10%)",)


def test_a_regressed_slice_is_named() -> None:
    base = _run([True] * 200)
    cand = _run([i % 2 == 1 or i % 8 != 0 for i in range(200)])  # even slice: -25 points
    verdict = _verdict(cand, base)
    assert not verdict.passed
    assert any(w.startswith("slice 'even' (100 examples) regressed") for w in verdict.warnings)
    assert not any("'odd'" in w for w in verdict.warnings)


def test_holm_adjustment() -> None:
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([]) == []


def _noisy_pair(
    rng: np.random.Generator, n: int, drop: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    # Each example has its own difficulty; each side draws its outcome independently.
    p = rng.beta(4, 1, size=n)  # mean pass rate 0.8, spread across examples
    base = rng.random(n) < p
    cand = rng.random(n) < np.clip(p - drop, 0, 1)
    return base, cand


def test_noise_does_not_fail_at_the_documented_sample_size() -> None:
    rng = np.random.default_rng(7)
    runs = 2000
    fails = 0
    for _ in range(runs):
        base, cand = _noisy_pair(rng, 200)
        test = mcnemar(list(base), list(cand))
        delta = (cand.sum() - base.sum()) / 200 * 100
        fails += regressed(
            delta, test.p_value, max_points=GATE.max_regression_points, alpha=GATE.alpha
        )
    # Two-sided alpha 0.05 puts at most ~2.5% on the "worse" side; it is well under 1 in 40.
    assert fails / runs < 0.025, fails


def test_one_noisy_rerun_passes_the_full_gate() -> None:
    base, cand = _noisy_pair(np.random.default_rng(1), 200)
    assert _verdict(_run(cand), _run(base)).passed


def test_a_real_ten_point_drop_is_caught_at_that_size() -> None:
    rng = np.random.default_rng(3)
    caught = 0
    for _ in range(200):
        base, cand = _noisy_pair(rng, 200, drop=0.10)
        test = mcnemar(list(base), list(cand))
        delta = (cand.sum() - base.sum()) / 200 * 100
        caught += regressed(delta, test.p_value, max_points=2.0, alpha=0.05)
    assert caught / 200 > 0.5, caught
