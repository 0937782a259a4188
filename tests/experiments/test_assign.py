"""Assignment: the sticky bucket, ranges laid out candidates first, cohorts and units."""

from __future__ import annotations

import ast
import hashlib
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from keel.experiments._dist import chi2_sf
from keel.experiments.assign import (
    BUCKETS,
    assign,
    bucket,
    eligible,
    ranges,
    shares_at,
    unit_id,
)
from keel.experiments.spec import Experiment

UNITS = [f"tenant-{i % 97}/user-{i}" for i in range(100_000)]
SOME = UNITS[:20_000]  # enough to count movers exactly, at a fifth of the time


def experiment(**fields: Any) -> Experiment:
    base: dict[str, Any] = {
        "name": "rag-v3",
        "prompt": "rag",
        "variants": [
            {"name": "control", "control": True, "prompt_version": "1.0.0"},
            {"name": "v3", "prompt_version": "3.0.0"},
        ],
        "ramp": {},
    }
    base.update(fields)
    return Experiment.model_validate(base)


THREE_WAY = experiment(
    variants=[
        {"name": "a", "prompt_version": "2"},
        {"name": "control", "control": True, "prompt_version": "1"},
        {"name": "b", "alias": "fast"},
    ],
    ramp=None,
    split={"a": 20, "control": 50, "b": 30},
)


# --- the bucket ---------------------------------------------------------------------


def test_bucket_is_the_documented_formula_and_pinned() -> None:
    digest = hashlib.sha256(b"rag-v3:acme/alice").digest()
    assert bucket("rag-v3", "acme/alice") == int.from_bytes(digest[:8], "big") % 10_000
    # Pinned: a change here reshuffles every running experiment's units.
    assert [bucket("rag-v3", "acme/alice"), bucket("rag-v3", "acme/bob"), bucket("seed", "")] == [
        1535,
        2195,
        1709,
    ]


def test_bucket_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from keel.experiments.assign import bucket;"
        "print(*(bucket('s', f'u{i}') for i in range(50)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(bucket("s", f"u{i}")) for i in range(50)]


def test_buckets_are_uniform_over_100k_units() -> None:
    counts = Counter(bucket("rag-v3", u) // 100 for u in UNITS)  # 100 groups of 1 %
    expected = len(UNITS) / 100
    chi2 = sum((counts[g] - expected) ** 2 / expected for g in range(100))
    assert chi2_sf(chi2, 99) > 0.001
    assert all(0 <= b < BUCKETS for b in (bucket("x", u) for u in UNITS[:1000]))


def test_the_seed_reshuffles_units() -> None:
    same = sum(bucket("one", u) // 5000 == bucket("two", u) // 5000 for u in UNITS[:10_000])
    assert 4_800 < same < 5_200  # independent halves agree about half the time


# --- ranges -------------------------------------------------------------------------


def test_candidates_first_then_control() -> None:
    assert ranges(experiment(), {"v3": 5, "control": 95}) == [
        ("v3", 0, 500),
        ("control", 500, 10_000),
    ]
    assert ranges(THREE_WAY, THREE_WAY.split or {}) == [
        ("a", 0, 2000),
        ("b", 2000, 5000),
        ("control", 5000, 10_000),
    ]


def test_control_takes_the_rest_and_shares_round_to_buckets() -> None:
    assert ranges(experiment(), {"v3": 0.014}) == [("v3", 0, 1), ("control", 1, 10_000)]
    assert ranges(experiment(), {"control": 100}) == [("v3", 0, 0), ("control", 0, 10_000)]
    assert ranges(THREE_WAY, {"a": 33.335, "b": 66.665})[-1] == ("control", 10_000, 10_000)
    assert ranges(experiment(), {"v3": 100, "control": 0}) == [
        ("v3", 0, 10_000),
        ("control", 10_000, 10_000),
    ]


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"nope": 5}, "lacks"),
        ({"v3": -1}, "negative"),
        ({"a": 60, "b": 50}, "more than 100"),
    ],
)
def test_bad_shares_are_refused(shares: dict[str, float], message: str) -> None:
    target = THREE_WAY if "a" in shares else experiment()
    with pytest.raises(ValueError, match=message):
        ranges(target, shares)


# --- A/A sanity ---------------------------------------------------------------------


def _within_sampling_error(counts: Counter[str], shares: dict[str, float]) -> None:
    n = sum(counts.values())
    chi2 = 0.0
    for name, share in shares.items():
        p = share / 100
        expected = n * p
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - expected) < 4 * sigma, (name, counts[name], expected)
        chi2 += (counts[name] - expected) ** 2 / expected
    assert chi2_sf(chi2, len(shares) - 1) > 0.001


@pytest.mark.parametrize(
    ("exp", "shares"),
    [
        (experiment(), {"v3": 50.0, "control": 50.0}),
        (experiment(), {"v3": 1.0, "control": 99.0}),
        (THREE_WAY, {"a": 20.0, "b": 30.0, "control": 50.0}),
    ],
)
def test_a_a_split_is_within_sampling_error(exp: Experiment, shares: dict[str, float]) -> None:
    counts = Counter(assign(exp, shares, u).name for u in UNITS)
    _within_sampling_error(counts, shares)


# --- stickiness, and what moves when the split changes -------------------------------


def test_a_unit_keeps_its_variant() -> None:
    exp = experiment()
    first = [assign(exp, {"v3": 20}, u).name for u in UNITS[:2000]]
    again = [assign(exp, {"v3": 20}, u).name for u in UNITS[:2000]]
    assert first == again


def test_ramping_up_only_moves_control_units_into_the_candidate() -> None:
    exp = experiment()
    seed = exp.hash_seed
    buckets = [bucket(seed, u) for u in SOME]
    before = {u: assign(exp, {"v3": 1}, u).name for u in SOME}
    for low, high in [(1, 5), (5, 20), (20, 50), (50, 100)]:
        after = {u: assign(exp, {"v3": high}, u).name for u in SOME}
        movers = [u for u in SOME if before[u] != after[u]]
        # Exactly the units in buckets [low %, high %) move, and only control -> candidate.
        expected = sum(low * 100 <= b < high * 100 for b in buckets)
        assert len(movers) == expected
        assert all(before[u] == "control" and after[u] == "v3" for u in movers)
        before = after


def test_a_split_change_moves_exactly_the_buckets_whose_owner_changed() -> None:
    old = {"a": 20.0, "b": 30.0, "control": 50.0}
    new = {"a": 20.0, "b": 40.0, "control": 40.0}  # b grows into control
    seed = THREE_WAY.hash_seed
    owner_old = {b: n for n, lo, hi in ranges(THREE_WAY, old) for b in range(lo, hi)}
    owner_new = {b: n for n, lo, hi in ranges(THREE_WAY, new) for b in range(lo, hi)}
    changed = {b for b in range(BUCKETS) if owner_old[b] != owner_new[b]}
    assert changed == set(range(5000, 6000))  # the last candidate grows into control only
    moved = [u for u in SOME if assign(THREE_WAY, old, u) != assign(THREE_WAY, new, u)]
    assert len(moved) == sum(bucket(seed, u) in changed for u in SOME)
    assert {assign(THREE_WAY, old, u).name for u in moved} == {"control"}


def test_ramping_down_moves_candidate_units_back_only() -> None:
    exp = experiment()
    moved = [u for u in SOME if assign(exp, {"v3": 20}, u) != assign(exp, {"v3": 5}, u)]
    assert {assign(exp, {"v3": 5}, u).name for u in moved} == {"control"}
    assert len(moved) == sum(500 <= bucket(exp.hash_seed, u) < 2000 for u in SOME)


# --- shares per mode ----------------------------------------------------------------


def test_shares_at_each_mode() -> None:
    assert shares_at(experiment(), 2) == {"v3": 20, "control": 80}
    assert shares_at(THREE_WAY) == {"a": 20, "control": 50, "b": 30}
    shadow = experiment(ramp=None, shadow={})
    assert shares_at(shadow) == {"control": 100, "v3": 0}
    with pytest.raises(ValueError, match="outside"):
        shares_at(experiment(), 5)


# --- cohorts and units --------------------------------------------------------------

COHORT = {"tiers": ["free", "pro"], "exclude_tenants": ["noisy"], "include_tenants": ["bigco"]}
OPT_IN = {"opt_in_tiers": ["enterprise"], "include_tenants": ["acme"]}


@pytest.mark.parametrize(
    ("cohort", "tenant", "tier", "expected"),
    [
        ({}, "anyone", None, True),
        (COHORT, "t1", "free", True),
        (COHORT, "t1", "enterprise", False),
        (COHORT, "t1", None, False),
        (COHORT, "noisy", "free", False),  # excluded beats everything
        (COHORT, "bigco", "enterprise", True),  # listed beats the tier rule
        (OPT_IN, "t1", "free", True),
        (OPT_IN, "t1", "enterprise", False),  # an opt-in tier, not listed
        (OPT_IN, "acme", "enterprise", True),  # opted in
        ({"include_tenants": ["a", "b"]}, "a", "free", True),
        ({"include_tenants": ["a", "b"]}, "c", "free", False),  # the list is the cohort
        ({"exclude_tenants": ["a"], "include_tenants": ["a"]}, "a", None, False),
    ],
)
def test_eligible(cohort: dict[str, Any], tenant: str, tier: str | None, expected: bool) -> None:
    assert eligible(experiment(cohort=cohort), tenant, tier) is expected


def test_unit_ids() -> None:
    assert unit_id(experiment(unit="tenant"), "acme", "alice", "req-1") == "acme"
    assert unit_id(experiment(unit="request"), "acme", "alice", "req-1") == "req-1"
    assert unit_id(experiment(unit="user"), "acme", "alice", "req-1") == "acme/alice"
    # Same end-user id, different tenants: different units.
    assert unit_id(experiment(), "other", "alice", "r") != unit_id(
        experiment(), "acme", "alice", "r"
    )
    assert unit_id(experiment(unit="user"), "acme", None, "req-1") is None
    assert unit_id(experiment(unit="user"), "acme", "", "req-1") is None


# --- the package --------------------------------------------------------------------


def test_keel_experiments_exports_agree() -> None:
    import keel.experiments as experiments

    tree = ast.parse(Path(experiments.__file__).read_text())
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        if isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names
    }
    assert set(experiments.__all__) == set(experiments._EXPORTS) == typed
    for name in experiments.__all__:
        assert getattr(experiments, name) is not None
