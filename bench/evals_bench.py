"""Eval runner benchmark: a 1,000-example suite against the simulator, in-process.

Goals (issue 6): the first run, target and LLM judge both called for every
example at concurrency 32, within 30 s; a re-run of the unchanged suite,
whose judge verdicts all come from the judge cache, within 5 s.

    .venv/bin/python bench/evals_bench.py [--examples 1000] [--concurrency 32]

Each run is what ``keel eval run`` does short of printing: a fresh gateway
app in-process (its own lifespan, a temporary key), the suite's scorers
built with a fresh ``JudgeCache`` handle on the same database, the run
stored. Exit 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from keel.config import load_config
from keel.evals.client import InProcessGatewayClient
from keel.evals.dataset import load_dataset
from keel.evals.runner import ScorerContext, build_scorers, evaluate, store_evaluation
from keel.evals.suite import load_suite
from keel.store import JudgeCache, make_engine, upgrade

FIRST_GOAL_S = 30.0
CACHED_GOAL_S = 5.0
VERDICT = json.dumps({"score": 5, "pass": True, "reason": "answers the question"})


def write_project(folder: Path, examples: int, concurrency: int) -> Path:
    config = {
        "database_url": f"sqlite:///{folder / 'keel.db'}",
        "providers": {
            # No latency: the benchmark measures Keel (runner + gateway + judge cache).
            # No scripted answer either: each question gets its own derived sentence,
            # so the judge is asked 1,000 different things on the first run.
            "sim": {"kind": "simulator", "seed": 1},
            "sim-judge": {
                "kind": "simulator",
                "seed": 2,
                "answers": [{"pattern": "<answer>", "answer": VERDICT}],
            },
        },
        "models": [
            {"alias": "fast", "deployments": [{"provider": "sim", "model": "m"}]},
            {"alias": "judge", "deployments": [{"provider": "sim-judge", "model": "j"}]},
        ],
        "prices": {
            "sim/m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            "sim-judge/j": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
        },
        "telemetry": {"log": {"destination": "off"}},
    }
    (folder / "keel.yaml").write_text(yaml.safe_dump(config))
    rows = [
        {
            "id": f"q{i:05d}",
            "messages": [{"role": "user", "content": f"Question {i}: tell me about topic {i}."}],
            "tags": [f"group-{i % 4}"],
        }
        for i in range(examples)
    ]
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    suite = {
        "name": "bench",
        "dataset": "data.jsonl",
        "target": {"alias": "fast"},
        "scorers": [
            {"type": "regex", "pattern": "\\w+"},
            {"type": "judge", "alias": "judge", "rubric": "The answer is correct."},
        ],
        "concurrency": concurrency,
        "baseline": "none",
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


async def one_run(suite_path: Path) -> dict[str, Any]:
    suite = load_suite(suite_path)
    dataset = load_dataset(suite.dataset_path)
    config = load_config(suite_path.parent / "keel.yaml")
    engine = make_engine(config.database_url)
    upgrade(engine)
    try:
        started = time.perf_counter()
        cache = JudgeCache(engine)
        scorers = build_scorers(suite, ScorerContext(suite.judge, cache, engine))
        async with InProcessGatewayClient(config, retries=suite.retries) as client:
            evaluation = await evaluate(
                suite, dataset.examples, dataset.content_hash, client, scorers, progress=False
            )
        store_evaluation(engine, evaluation)
        seconds = time.perf_counter() - started
        stats = cache.stats
        return {
            "seconds": seconds,
            "examples": evaluation.candidate.n,
            "pass_rate": evaluation.candidate.pass_rate,
            "errors": evaluation.candidate.errors,
            "gateway_calls": client.calls,
            "judge_cache": stats.as_dict(),
        }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-evals-bench-") as tmp:
        suite_path = write_project(Path(tmp), args.examples, args.concurrency)
        first = asyncio.run(one_run(suite_path))
        cached = asyncio.run(one_run(suite_path))
    ok = True
    for name, result, goal in (
        ("first run", first, FIRST_GOAL_S),
        ("cached re-run", cached, CACHED_GOAL_S),
    ):
        met = result["seconds"] <= goal and result["errors"] == 0
        ok = ok and met
        print(
            f"{name:>13}: {result['seconds']:6.2f} s for {result['examples']} examples"
            f" (goal {goal:g} s: {'met' if met else 'MISSED'}), {result['gateway_calls']} gateway"
            f" calls, judge cache {result['judge_cache']}, pass rate {result['pass_rate']:.3f},"
            f" errors {result['errors']}"
        )
    if cached["judge_cache"]["misses"] != 0:
        print("the cached re-run asked the judge again", file=sys.stderr)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
