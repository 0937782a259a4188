"""The runner: order, bounded concurrency, repeats and reducers, errors as failures, baselines."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from runner_support import (
    Boom,
    Exact,
    FakeGateway,
    Length,
    examples,
    failing,
    suite,
    variables_text,
)

from keel.errors import ConfigError, NotFound
from keel.evals.client import CallError
from keel.evals.runner import (
    ScorerContext,
    build_scorers,
    evaluate,
    request_body,
    run_target,
    store_evaluation,
)
from keel.evals.suite import Target
from keel.store import EvalRunStore, make_engine, upgrade

TARGET = Target("prompt", "classify", version="2.0.0")


async def test_results_keep_dataset_order_whatever_finishes_first() -> None:
    rng = random.Random(5)
    delays = {f"answer {i}": rng.random() / 200 for i in range(60)}
    gateway = FakeGateway(delay=lambda body: delays[variables_text(body)])
    run = await run_target(
        gateway, TARGET, examples(60), [Exact()], suite="s", dataset_hash="h", repeats=2
    )
    assert [e.id for e in run.examples] == [f"ex{i:04d}" for i in range(60)]
    assert all([t.repeat for t in e.trials] == [0, 1] for e in run.examples)
    assert run.pass_rate == 1.0 and run.errors == 0


async def test_concurrency_is_bounded() -> None:
    gateway = FakeGateway(delay=lambda body: 0.002)
    await run_target(
        gateway, TARGET, examples(50), [Exact()], suite="s", dataset_hash="h", concurrency=4
    )
    assert gateway.max_in_flight == 4


async def test_a_failed_call_is_a_failure_counted_in_every_mean() -> None:
    def answer(body: Mapping[str, Any]) -> str:
        if variables_text(body) == "answer 1":
            raise CallError("502 provider_all_upstreams_failed: down", status=502)
        return variables_text(body)

    run = await run_target(
        FakeGateway(answer), TARGET, examples(4), [Exact(), Length()], suite="s", dataset_hash="h"
    )
    bad = run.examples[1]
    assert bad.error == "502 provider_all_upstreams_failed: down"
    assert bad.errored and not bad.passed
    assert bad.scores["exact"].value == 0.0 and bad.scores["exact"].error is not None
    assert run.n == 4 and run.pass_rate == 0.75  # never dropped from the denominator
    assert run.mean("exact") == 0.75
    assert run.errors == 1


async def test_a_scorer_that_raises_fails_the_example_only_for_that_scorer() -> None:
    run = await run_target(
        FakeGateway(), TARGET, examples(3), [Exact(), Boom()], suite="s", dataset_hash="h"
    )
    for example in run.examples:
        assert example.scores["exact"].passed
        boom = example.scores["boom"]
        assert not boom.passed and boom.value == 0.0
        assert boom.error == "RuntimeError: scorer exploded"
    assert run.pass_rate == 0.0 and run.errors == 3


@pytest.mark.parametrize(
    ("reducer", "value", "passed"),
    [("mean", 2 / 3, True), ("pass@k", 1.0, True), ("all-k", 0.0, False)],
)
async def test_reducers(reducer: str, value: float, passed: bool) -> None:
    calls = {"n": 0}

    def flaky(body: Mapping[str, Any]) -> str:
        calls["n"] += 1
        return "wrong" if calls["n"] % 3 == 0 else variables_text(body)

    run = await run_target(
        FakeGateway(flaky),
        TARGET,
        examples(1),
        [Exact()],
        suite="s",
        dataset_hash="h",
        repeats=3,
        reducer=reducer,
        concurrency=1,
    )
    outcome = run.examples[0].scores["exact"]
    assert outcome.value == pytest.approx(value)
    assert outcome.passed is passed
    assert outcome.flaky


def test_request_bodies() -> None:
    example = examples(1)[0]
    body = request_body(TARGET, example, "s")
    assert body["prompt"] == {
        "name": "classify",
        "version": "2.0.0",
        "variables": {"text": "answer 0"},
    }
    assert body["metadata"] == {"eval_suite": "s", "eval_example": "ex0000"}
    alias = request_body(Target("alias", "fast"), example, "s")
    assert alias["model"] == "fast" and alias["messages"][0]["content"] == "answer 0"
    label = request_body(Target("prompt", "classify", label="staging"), example, "s")
    assert label["prompt"]["label"] == "staging"


async def test_evaluate_runs_the_production_version_as_baseline() -> None:
    worse = {f"answer {i}" for i in range(0, 200, 4)}  # 25% of examples broken in v2

    def v2(body: Mapping[str, Any]) -> str:
        text = variables_text(body)
        return "nope" if text in worse else text

    gateway = FakeGateway(
        versions={"1.0.0": variables_text, "2.0.0": v2}, labels={"production": "1.0.0"}
    )
    evaluation = await evaluate(suite(), examples(200), "h", gateway, [Exact()], progress=False)
    assert evaluation.baseline_source == "label:production → 1.0.0"
    assert evaluation.baseline is not None and evaluation.baseline.pass_rate == 1.0
    assert evaluation.candidate.pass_rate == 0.75
    assert evaluation.candidate.prompt_hash == "sha256:classify-2.0.0"
    assert not evaluation.passed
    versions = {b["prompt"]["version"] for b in gateway.bodies}
    assert versions == {"1.0.0", "2.0.0"}


async def test_evaluate_pins_a_label_target_before_calling() -> None:
    gateway = FakeGateway(
        versions={"1.0.0": variables_text, "2.0.0": variables_text},
        labels={"staging": "2.0.0", "production": "1.0.0"},
    )
    evaluation = await evaluate(
        suite(target={"prompt": "classify@label:staging"}),
        examples(10),
        "h",
        gateway,
        [Exact()],
        progress=False,
    )
    assert evaluation.candidate.prompt_version == "2.0.0"
    assert evaluation.passed
    assert all("version" in b["prompt"] for b in gateway.bodies)


async def test_the_candidate_is_production_itself() -> None:
    gateway = FakeGateway(versions={"2.0.0": variables_text}, labels={"production": "2.0.0"})
    evaluation = await evaluate(suite(), examples(5), "h", gateway, [Exact()], progress=False)
    assert evaluation.baseline is None and evaluation.passed
    assert "the candidate itself" in evaluation.baseline_source
    assert len(gateway.bodies) == 5  # not run twice


async def test_an_unknown_version_is_an_error_not_a_failed_gate() -> None:
    gateway = FakeGateway(versions={"1.0.0": variables_text})
    with pytest.raises(NotFound, match=r"prompt classify has no version 2\.0\.0"):
        await evaluate(suite(), examples(5), "h", gateway, [Exact()], progress=False)


async def test_a_stored_run_is_a_baseline(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    upgrade(engine)
    try:
        gateway = FakeGateway(versions={"1.0.0": variables_text, "2.0.0": failing("400 bad", 400)})
        first = await evaluate(
            suite(target={"prompt": "classify@1.0.0"}, baseline="none"),
            examples(30),
            "h",
            gateway,
            [Exact()],
            progress=False,
        )
        stored = store_evaluation(engine, first)
        assert stored.passed and stored.prompt_version == "1.0.0"
        second = await evaluate(
            suite(baseline=f"run:{stored.id}"),
            examples(30),
            "h2",
            gateway,
            [Exact()],
            store=EvalRunStore(engine),
            progress=False,
        )
        assert second.baseline is not None and second.baseline.run_id == stored.id
        assert second.baseline.pass_rate == 1.0
        assert second.comparison.paired == 30
        assert second.candidate.errors == 30
        assert not second.passed
        assert any("another dataset version" in note for note in second.notes)
    finally:
        engine.dispose()


def test_build_scorers_names_bad_specs_and_floors() -> None:
    def builder(spec: Mapping[str, Any], context: ScorerContext, where: str) -> Any:
        if spec["type"] == "bad":
            raise ValueError("no such scorer")
        return Exact(spec.get("name", spec["type"]))

    with pytest.raises(ConfigError, match=r"scorers\[1\]: no such scorer"):
        build_scorers(suite(scorers=[{"type": "exact"}, {"type": "bad"}]), ScorerContext(), builder)
    with pytest.raises(ConfigError, match=r"scorers\[1\]: a second scorer named 'exact'"):
        build_scorers(
            suite(scorers=[{"type": "exact"}, {"type": "exact"}]), ScorerContext(), builder
        )
    with pytest.raises(ConfigError, match=r"gate.floors.judge: no scorer of that name"):
        build_scorers(suite(gate={"floors": {"judge": 0.5}}), ScorerContext(), builder)


def test_the_registry_builds_the_suite_scorers() -> None:
    built = build_scorers(suite(scorers=[{"type": "exact"}, {"type": "contains"}]), ScorerContext())
    assert [s.name for s in built] == ["exact", "contains"]
    with pytest.raises(ConfigError, match=r"scorers\[0\].type: unknown scorer 'exakt'"):
        build_scorers(suite(scorers=[{"type": "exakt"}]), ScorerContext())


async def test_cancellation_is_not_swallowed() -> None:
    gateway = FakeGateway(delay=lambda body: 10)
    task = asyncio.ensure_future(
        run_target(gateway, TARGET, examples(3), [Exact()], suite="s", dataset_hash="h")
    )
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
