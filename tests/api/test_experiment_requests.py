"""Experiments on the request path: sticky assignment, exposure records, rollback, shadow."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from keel.config import KeelConfig
from keel.experiments.spec import Experiment
from keel.prompts import MessageTemplate, PromptFile
from keel.store import ExperimentStore, PromptRegistry, record_eval_run
from support import Gateway, gateway_config, open_gateway


def config(tmp_path: Path) -> KeelConfig:
    return gateway_config(
        tmp_path,
        {
            "providers": {
                "sim": {"kind": "simulator", "seed": 3},
                "slow": {"kind": "simulator", "latency": {"p50_ms": 300, "p99_ms": 300}},
            },
            "models": [
                {"alias": "fast", "deployments": [{"provider": "sim", "model": "small"}]},
                {"alias": "smart", "deployments": [{"provider": "sim", "model": "large"}]},
                {"alias": "slow", "deployments": [{"provider": "slow", "model": "large"}]},
            ],
            "telemetry": {"log": {"destination": "off"}},
        },
    )


def experiment(**fields: Any) -> Experiment:
    return Experiment.model_validate(fields)


async def start(gw: Gateway, spec: Experiment) -> None:
    ExperimentStore(gw.state.engine).start(spec, "test")
    await gw.state.experiments.refresh()


def ask(gw: Gateway, user: str, model: str = "fast", **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "user": user}
    return gw.chat({**body, **extra})


def stored(gw: Gateway, response: httpx.Response) -> Any:
    gw.state.writer.flush()
    return gw.state.requests.get(response.headers["x-request-id"], tenant="acme")


async def test_units_keep_their_variant_and_every_exposure_is_recorded(tmp_path: Path) -> None:
    split = experiment(
        name="model-ab",
        alias="fast",
        unit="user",
        variants=[
            {"name": "control", "control": True, "alias": "fast"},
            {"name": "smart", "alias": "smart"},
        ],
        split={"control": 50, "smart": 50},
    )
    async with open_gateway(config(tmp_path)) as gw:
        await start(gw, split)
        first = [await ask(gw, f"user-{i}") for i in range(40)]
        again = [await ask(gw, f"user-{i}") for i in range(40)]
        row = stored(gw, first[0])
    variants = [r.headers["x-keel-variant"] for r in first]
    assert variants == [r.headers["x-keel-variant"] for r in again]  # sticky
    assert {"control", "smart"} == set(variants)
    for response in first:
        model = "sim/large" if response.headers["x-keel-variant"] == "smart" else "sim/small"
        assert response.headers["x-keel-model"] == model
    assert (row.experiment, row.variant) == ("model-ab", variants[0])


async def test_a_rollback_sends_everyone_back_to_the_control(tmp_path: Path) -> None:
    prompts = [
        PromptFile(
            name="greet",
            version=version,
            model="fast",
            messages=[MessageTemplate(role="user", content=text)],
        )
        for version, text in (("1.0.0", "Say hello."), ("1.1.0", "Say hello loudly."))
    ]
    ramp = experiment(
        name="greet-v11",
        prompt="greet",
        unit="request",
        variants=[
            {"name": "control", "control": True, "prompt_version": "1.0.0"},
            {"name": "v11", "prompt_version": "1.1.0"},
        ],
        split={"control": 0, "v11": 100},
    )
    async with open_gateway(config(tmp_path)) as gw:
        registry = PromptRegistry(gw.state.engine)
        registry.push(prompts, actor="test")
        record_eval_run(
            gw.state.engine,
            suite="smoke",
            prompt_name="greet",
            prompt_version="1.0.0",
            dataset_hash="sha256:0",
            passed=True,
        )
        registry.promote("greet", "1.0.0", "production", actor="test")
        await gw.state.prompts.refresh()
        await start(gw, ramp)
        ref = {"prompt": {"name": "greet"}, "messages": []}
        during = [await gw.chat(ref) for _ in range(5)]
        pinned = await gw.chat({"prompt": {"name": "greet", "version": "1.0.0"}, "messages": []})
        ExperimentStore(gw.state.engine).rollback("greet-v11", "test", reason="worse answers")
        await gw.state.experiments.refresh()
        after = [await gw.chat(ref) for _ in range(5)]
    assert {r.headers["x-keel-prompt-version"] for r in during} == {"1.1.0"}
    assert "x-keel-experiment" not in pinned.headers  # an exact version opts out
    # Rolled back, the experiment is over: requests are served as if it never ran.
    assert {r.headers["x-keel-prompt-version"] for r in after} == {"1.0.0"}
    assert not any("x-keel-experiment" in r.headers for r in after)


def shadow_experiment(**shadow: Any) -> Experiment:
    return experiment(
        name="slow-shadow",
        alias="fast",
        unit="request",
        variants=[
            {"name": "control", "control": True, "alias": "fast"},
            {"name": "cand", "alias": "slow"},
        ],
        shadow={"share": 1.0, **shadow},
    )


async def test_shadow_copies_never_change_or_slow_the_users_answer(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        await start(gw, shadow_experiment(queue_size=10, concurrency=1))
        answer = await ask(gw, "ann")
        # The user has the control's answer while the 300 ms candidate is still running.
        in_flight = gw.state.shadow.stats.done
        await gw.state.shadow.drain()
        gw.state.writer.flush()
        rows = gw.state.requests.list_requests(_filter(), limit=10)
    assert answer.status_code == 200
    assert answer.headers["x-keel-model"] == "sim/small"
    assert answer.headers["x-keel-variant"] == "control"
    assert in_flight == 0
    shadow_rows = [r for r in rows if r.shadow]
    assert len(shadow_rows) == 1
    copy = shadow_rows[0]
    assert (copy.experiment, copy.variant, copy.deployment) == ("slow-shadow", "cand", "slow/large")
    assert copy.request_id == f"{answer.headers['x-request-id']}:shadow"
    assert 0 <= copy.detail["similarity"] <= 1


async def test_a_full_shadow_queue_drops_copies_and_counts_them(tmp_path: Path) -> None:
    async with open_gateway(config(tmp_path)) as gw:
        await start(gw, shadow_experiment(queue_size=1, concurrency=1))
        answers = await asyncio.gather(*(ask(gw, f"u{i}") for i in range(6)))
        stats = gw.state.shadow.stats
        queued, dropped = stats.queued, stats.dropped
        await gw.state.shadow.drain()
    assert all(a.status_code == 200 for a in answers)
    assert queued + dropped == 6
    assert dropped >= 4  # one running, one waiting: the rest find the queue full


def _filter() -> Any:
    from keel.store import TraceFilter

    return TraceFilter(tenant="acme")


async def test_a_sampled_share_is_judged_online_before_it_is_recorded(tmp_path: Path) -> None:
    cfg = config(tmp_path).model_copy(deep=True)
    raw = cfg.model_dump(mode="json")
    raw["providers"]["judge"] = {
        "kind": "simulator",
        "answers": [
            {"pattern": "(?s).*", "answer": '{"score": 4, "pass": true, "reason": "clear"}'}
        ],
    }
    raw["models"].append({"alias": "judge", "deployments": [{"provider": "judge", "model": "j"}]})
    judged = experiment(
        name="judged",
        alias="fast",
        unit="request",
        variants=[
            {"name": "control", "control": True, "alias": "fast"},
            {"name": "smart", "alias": "smart"},
        ],
        guards=[
            {
                "metric": "judge_score",
                "max_decrease": 0.1,
                "judge_alias": "judge",
                "judge_sample": 1.0,
            }
        ],
        split={"control": 50, "smart": 50},
    )
    async with open_gateway(gateway_config(tmp_path, raw)) as gw:
        await start(gw, judged)
        answer = await ask(gw, "ann")
        await gw.state.online_judge.drain()
        row = stored(gw, answer)
        stats = gw.state.online_judge.stats
    assert answer.status_code == 200
    assert row is not None and row.experiment == "judged"
    assert row.detail["judge"] == 0.75  # 4 on the 1-5 scale
    assert (stats.judged, stats.dropped, stats.failed) == (1, 0, 0)
