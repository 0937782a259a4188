"""The judge through the real in-process gateway, answered by the simulator's scripts.

The judge alias is a simulator deployment whose scripted answers are verdict
JSON; the ``GatewayClient`` here is a small test-only one over the ASGI app
(the runner ships the production clients). It proves the judge's calls take
the whole pipeline (so they are traced and costed) and that an unchanged
re-run, in a new gateway process over the same database, makes zero calls.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from keel.config import KeelConfig
from keel.evals.base import CallResult, Example, ScoringCase
from keel.evals.judge import JudgeError
from keel.evals.scorers import build
from keel.evals.scorers.judge import judge_usage, with_judge_cache
from keel.store import JudgeCache, RequestStore, make_engine
from support import Gateway, gateway_config, open_gateway


class AsgiClient:
    """A ``GatewayClient`` over the in-process gateway, counting its chat calls."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.calls = 0

    async def chat(self, body: Mapping[str, Any]) -> CallResult:
        self.calls += 1
        started = time.perf_counter()
        response = await self.gateway.chat(dict(body))
        response.raise_for_status()
        data = response.json()
        cost = response.headers.get("x-keel-cost-usd")
        return CallResult(
            text=data["choices"][0]["message"]["content"] or "",
            response=data,
            latency_ms=(time.perf_counter() - started) * 1000,
            cost_usd=None if cost in (None, "unknown") else float(cost),
            input_tokens=data["usage"]["prompt_tokens"],
            output_tokens=data["usage"]["completion_tokens"],
            request_id=response.headers["x-request-id"],
        )

    async def embed(self, alias: str, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError("the judge never embeds")


def verdict(score: int, passed: bool, reason: str) -> str:
    return orjson.dumps({"score": score, "pass": passed, "reason": reason}).decode()


def grounded(*claims: tuple[str, bool]) -> str:
    items = [{"claim": c, "supported": s} for c, s in claims]
    return orjson.dumps({"claims": items, "reason": "checked"}).decode()


# The simulator searches the last user message: the judge shows the candidate
# inside <answer> and, for groundedness, the documents inside <context>.
JUDGE_SCRIPT = [
    {
        "pattern": r"(?s)<answer>\s*Paris is the capital\..*<context>",
        "answer": grounded(("Paris is the capital of France", True)),
    },
    {
        "pattern": r"(?s)<answer>\s*Lyon is the capital.*<context>",
        "answer": grounded(("Lyon is the capital of France", False), ("Lyon is big", True)),
    },
    {"pattern": r"<answer>\s*Paris", "answer": verdict(5, True, "names Paris")},
    {"pattern": r"<answer>\s*Lyon", "answer": verdict(1, False, "names the wrong city")},
]


def config(tmp_path: Path) -> KeelConfig:
    return gateway_config(
        tmp_path,
        {
            "providers": {
                "sim": {"kind": "simulator", "seed": 7, "answers": JUDGE_SCRIPT},
            },
            "models": [
                {"alias": "judge", "deployments": [{"provider": "sim", "model": "judge-1"}]}
            ],
            "prices": {"sim/judge-1": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}},
        },
    )


CONTEXT = ("Paris is the capital and largest city of France.",)
EXAMPLES = [
    Example(id="good", reference="Paris", context=CONTEXT),
    Example(id="bad", reference="Paris", context=CONTEXT),
]
OUTPUTS = {"good": "Paris is the capital.", "bad": "Lyon is the capital, and it is big."}
SPECS = [
    {"type": "judge", "alias": "judge", "rubric": "The answer names the right capital."},
    {"type": "groundedness", "alias": "judge"},
]


async def run_once(cfg: KeelConfig) -> tuple[int, dict[tuple[str, str], Any]]:
    """One eval run's scoring: every example by both judge scorers, a fresh cache handle."""
    cache = JudgeCache(make_engine(cfg.database_url))
    async with open_gateway(cfg) as gw:
        client = AsgiClient(gw)
        scorers = [with_judge_cache(build(spec), cache) for spec in SPECS]
        scores = {}
        for example in EXAMPLES:
            output = CallResult(OUTPUTS[example.id], {}, 1.0, None, 1, 1)
            for scorer in scorers:
                case = ScoringCase(example=example, output=output, gateway=client)
                scores[(example.id, scorer.name)] = await scorer.score(case)
        usage = judge_usage(scorers)
        assert usage.calls == client.calls
        assert usage.unknown_cost_calls == 0
        assert (usage.cost_usd > 0) == (client.calls > 0)
    return client.calls, scores


async def test_an_unchanged_rerun_through_the_gateway_makes_zero_judge_calls(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    calls, first = await run_once(cfg)

    assert calls == 4
    assert first[("good", "judge")].value == 1.0 and first[("good", "judge")].passed
    assert first[("bad", "judge")].value == 0.0 and not first[("bad", "judge")].passed
    assert first[("good", "groundedness")].passed
    assert first[("bad", "groundedness")].value == 0.5
    assert "unsupported: 'Lyon is the capital of France'" in str(
        first[("bad", "groundedness")].detail
    )

    # The judge's calls went through the pipeline: counted in the spend rollup.
    engine = make_engine(cfg.database_url)
    rows = RequestStore(engine).spend(["alias"], since=datetime.now(UTC).date())
    assert [(r.group["alias"], r.requests) for r in rows] == [("judge", 4)]
    assert rows[0].cost_usd > 0

    calls_again, again = await run_once(cfg)
    assert calls_again == 0
    assert again == first
    engine.dispose()


async def test_a_judge_that_never_answers_json_is_an_error_after_one_retry(
    tmp_path: Path,
) -> None:
    scorer = build({"type": "judge", "alias": "judge", "rubric": "Correct."})
    async with open_gateway(config(tmp_path)) as gw:
        client = AsgiClient(gw)
        case = ScoringCase(
            example=Example(id="x"),
            output=CallResult("Madrid.", {}, 1.0, None, 1, 1),  # no script matches
            gateway=client,
        )
        with pytest.raises(JudgeError, match="no valid rubric verdict after a retry"):
            await scorer.score(case)
    assert client.calls == 2
