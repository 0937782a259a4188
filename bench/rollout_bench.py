"""Rollouts: time from a regression to its rollback, and false rollbacks of an equal candidate.

The issue's benchmark: over 20 seeded simulator runs each, (a) how long after a
regressed candidate starts serving the controller rolls it back, and (b) how
often an equal candidate is rolled back anyway. Both scenarios are the worked
example's (examples/rollouts): the same keel.yaml, prompt versions, experiment
files and simulated customers as ``run_demo.py``.

    .venv/bin/python bench/rollout_bench.py [--runs 20] [--rate 70] [--jobs 2]

Method (details in bench/README.md): each run is a fresh database and a real
gateway app in-process (httpx ASGI transport), with the simulator's latencies
and answers; every request and every thumbs up/down goes through the gateway
(POST /v1/chat/completions, POST /v1/feedback) and is recorded by it. Time is
virtual, so a run takes seconds instead of minutes: request *i* happens at
``i / rate`` seconds, its stored row is re-timed to that instant before the
controller looks, and ``keel.experiments.runtime.Controller.tick`` is called
with the virtual clock at every analysis (every ``ramp.interval_s``, as
``keel serve`` does). Gateways re-read the experiments once a second, so a
decision reaches traffic at a random phase within the next second, as in
``keel serve``. Exit 1 when a regressed candidate was not rolled back in
every run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from keel.config import load_config
from keel.experiments.runtime import Controller
from keel.experiments.spec import Experiment
from keel.prompts import load_prompt_file
from keel.store import ExperimentStore, KeyStore, PromptRegistry, make_engine, upgrade
from keel.store.tables import requests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rollouts"
SCENARIOS = {
    # A candidate worse on the refund slice and about 40 % slower (prompt 1.1.0).
    "regression": EXAMPLE / "experiments" / "support-next.yaml",
    # A candidate as good as the control (prompt 1.2.0).
    "equal": EXAMPLE / "experiments" / "support-friendly.yaml",
}
T0 = datetime(2030, 1, 1, tzinfo=UTC)  # virtual time zero; real rows are older, so unseen
FEEDBACK_DELAY_S = 1.0  # a customer reads the answer, then clicks
MAX_VIRTUAL_S = 240.0  # a run that has not ended by then is "undecided"


def demo_module() -> ModuleType:
    """examples/rollouts/run_demo.py: its customers, questions and rating habits."""
    name = "rollouts_demo"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / "run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


class _Idle:
    """Replaces the app's own controller and experiment refresh loop: the bench drives both."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def run(self) -> None:
        await asyncio.Event().wait()


def take_over_the_clock() -> None:
    """The app must not decide or re-read experiments on the real clock; the bench does both."""
    import keel.api.state as app_state
    from keel.pipeline.experimenting import ExperimentCatalog

    if not hasattr(app_state, "Controller"):
        raise SystemExit("keel.api.state no longer builds a Controller: update the bench")
    app_state.Controller = _Idle  # type: ignore[misc,assignment]

    async def idle(self: ExperimentCatalog) -> None:
        await asyncio.Event().wait()

    ExperimentCatalog.run = idle  # type: ignore[method-assign]


@dataclass
class Sent:
    request_id: str | None
    at: float  # virtual seconds
    variant: str | None
    wrong: bool
    rated: bool
    useful: bool


@dataclass
class RunResult:
    scenario: str
    seed: int
    outcome: str  # rolled_back, completed, undecided
    decided_s: float | None = None  # from the candidate's first request to the decision
    step: float | None = None  # candidate share (%) when it was decided
    failed: list[str] = field(default_factory=list)  # guards that failed, or "srm"
    candidate_requests: int = 0  # served by the candidate before the decision
    candidate_wrong: int = 0  # ... of which wrong answers
    requests: int = 0
    real_s: float = 0.0


class Run:
    """One seeded rollout through an in-process gateway, on a virtual clock."""

    def __init__(
        self, scenario: str, seed: int, rate: float, concurrency: int, interval_s: float | None
    ) -> None:
        self.scenario = scenario
        self.interval_s = interval_s
        self.seed = seed
        self.rate = rate
        self.concurrency = concurrency
        self.demo = demo_module()
        self.rng = random.Random(seed)
        self.sent: list[Sent] = []
        self.retimed = 0  # self.sent[:retimed] carry their virtual time in the store
        self.rated_upto = 0  # feedback of self.sent[:rated_upto] was considered
        self.next_index = 0

    async def __call__(self) -> RunResult:
        started = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="keel-rollout-bench-"))
        os.environ["KEEL_DATABASE_URL"] = f"sqlite:///{folder / 'keel.db'}"
        os.environ["SIM_SEED"] = str(self.seed)
        os.environ["SIM_SEED_NEXT"] = str(self.seed + 1000)
        config = load_config(EXAMPLE / "keel.yaml")
        engine = make_engine(config.database_url)
        upgrade(engine)
        key, _ = KeyStore(engine).create_key("demo")
        registry = PromptRegistry(engine)
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            path = EXAMPLE / "prompts" / version / "support-answer.yaml"
            registry.push([load_prompt_file(path)])
        registry.promote("support-answer", "1.0.0", "production", force=True, reason="bench")
        raw = yaml.safe_load(SCENARIOS[self.scenario].read_text())
        raw["seed"] = f"{raw['name']}-{self.seed}"  # each run buckets the customers afresh
        if self.interval_s is not None:
            raw["ramp"]["interval_s"] = self.interval_s
        spec = Experiment.model_validate(raw)
        try:
            result = await self._drive(config, engine, key, spec)
        finally:
            engine.dispose()
            shutil.rmtree(folder, ignore_errors=True)
        result.real_s = time.perf_counter() - started
        return result

    async def _drive(self, config: Any, engine: sa.Engine, key: str, spec: Experiment) -> RunResult:
        from keel.api import create_app

        assert spec.ramp is not None
        clock = Clock()
        store = ExperimentStore(engine, clock=clock)
        controller = Controller(engine, clock=clock, owner="bench")
        interval = spec.ramp.interval_s
        # Where in each second the gateways re-read the experiments (their 1 s loop).
        phase = self.rng.random()
        app = create_app(config)
        async with app.control.router.lifespan_context(app.control) as lifespan:
            shared = dict(lifespan or {})
            state = shared["keel"]

            async def with_state(scope: Any, receive: Any, send: Any) -> None:
                scope["state"] = dict(shared)
                await app(scope, receive, send)

            transport = httpx.ASGITransport(app=with_state)
            headers = {"authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://keel", headers=headers, timeout=60
            ) as client:
                store.start(spec)
                await controller.tick(clock.at(0))  # the first look: nothing to see yet
                # Until the gateways' first re-read, nobody is in the experiment.
                await self._send(client, 0.0, phase)
                await state.experiments.refresh()
                analysis = interval
                while analysis <= MAX_VIRTUAL_S:
                    # The shares stay as they are until the re-read after this analysis.
                    await self._send(client, analysis - interval + phase, analysis + phase)
                    await asyncio.to_thread(state.writer.flush)
                    await self._retime(engine, analysis)
                    await self._feedback(client, analysis)
                    await controller.tick(clock.at(analysis))
                    record = store.get(spec.name)
                    if record.status in ("rolled_back", "completed"):
                        return self._result(spec, store, record.status)
                    await state.experiments.refresh()
                    analysis += interval
                return self._result(spec, store, "undecided")

    async def _send(self, client: httpx.AsyncClient, start: float, end: float) -> None:
        """Every request due in [start, end), ``concurrency`` at a time, in order."""
        questions, answers, weights = zip(*self.demo.QUESTIONS, strict=True)
        gate = asyncio.Semaphore(self.concurrency)
        tasks = []
        while (at := self.next_index / self.rate) < end:
            self.next_index += 1
            if at < start:
                continue
            i = self.rng.choices(range(len(questions)), weights=weights)[0]
            user = f"cust-{self.rng.randrange(self.demo.CUSTOMERS):04d}"
            rated, down = self.rng.random(), self.rng.random()
            await gate.acquire()
            tasks.append(
                asyncio.create_task(
                    self._one(client, gate, at, questions[i], answers[i], user, rated, down)
                )
            )
        self.sent.extend(await asyncio.gather(*tasks))

    async def _one(
        self,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        at: float,
        question: str,
        answer: str,
        user: str,
        rated: float,
        down: float,
    ) -> Sent:
        try:
            body = {
                "messages": [],
                "user": user,
                "prompt": {"name": "support-answer", "variables": {"question": question}},
            }
            response = await client.post("/v1/chat/completions", json=body)
        finally:
            gate.release()
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            return Sent(request_id, at, None, False, False, True)
        wrong = response.json()["choices"][0]["message"]["content"] != answer
        threshold = self.demo.DOWN_IF_WRONG if wrong else self.demo.DOWN_IF_RIGHT
        return Sent(
            request_id,
            at,
            response.headers.get("x-keel-variant"),
            wrong,
            rated < self.demo.RATED,
            down >= threshold,
        )

    async def _retime(self, engine: sa.Engine, until: float) -> None:
        """Give the stored rows of requests before ``until`` their virtual start time."""
        due = []
        while self.retimed < len(self.sent) and self.sent[self.retimed].at < until:
            sent = self.sent[self.retimed]
            if sent.request_id is not None:
                due.append({"rid": sent.request_id, "at": T0 + timedelta(seconds=sent.at)})
            self.retimed += 1
        if not due:
            return
        update = (
            sa.update(requests)
            .where(requests.c.request_id == sa.bindparam("rid"))
            .values(started_at=sa.bindparam("at"))
        )

        def write() -> None:
            with engine.begin() as conn:
                conn.execute(update, due)

        await asyncio.to_thread(write)

    async def _feedback(self, client: httpx.AsyncClient, now: float) -> None:
        """The thumbs of answers given at least FEEDBACK_DELAY_S before ``now``."""
        gate = asyncio.Semaphore(16)

        async def post(sent: Sent) -> None:
            async with gate:
                body = {"request_id": sent.request_id, "score": sent.useful}
                response = await client.post("/v1/feedback", json=body)
                assert response.status_code == 201, response.text

        due = []
        while (
            self.rated_upto < len(self.sent)
            and self.sent[self.rated_upto].at + FEEDBACK_DELAY_S <= now
        ):
            sent = self.sent[self.rated_upto]
            if sent.rated and sent.request_id is not None:
                due.append(post(sent))
            self.rated_upto += 1
        await asyncio.gather(*due)

    def _result(self, spec: Experiment, store: ExperimentStore, status: str) -> RunResult:
        candidate = spec.candidates[0].name
        result = RunResult(self.scenario, self.seed, status, requests=len(self.sent))
        first = next((s.at for s in self.sent if s.variant == candidate), None)
        if status == "undecided":
            return result
        decision = store.events(spec.name, limit=1)[0]
        decided = (decision.at - T0).total_seconds()
        served = [s for s in self.sent if s.variant == candidate and s.at < decided]
        result.decided_s = None if first is None else decided - first
        result.step = dict(decision.numbers.get("step") or {}).get("shares", {}).get(candidate)
        result.candidate_requests = len(served)
        result.candidate_wrong = sum(s.wrong for s in served)
        if status == "rolled_back":
            guards = decision.numbers.get("guards") or []
            result.failed = [g["metric"] for g in guards if g.get("status") == "failed"]
            if any("sample-ratio" in reason for reason in decision.reasons):
                result.failed.append("srm")
        return result


def one_run(job: tuple[str, int, float, int, float | None]) -> RunResult:
    take_over_the_clock()
    return asyncio.run(Run(*job)())


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper bound of a binomial rate (bisection on the binomial tail)."""
    if k >= n:
        return 1.0
    alpha = 1 - confidence

    def tail(p: float) -> float:  # P(X <= k | p)
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > alpha else (lo, mid)
    return hi


def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return (
        f"median {statistics.median(ordered):.1f}, p90 {p90:.1f}, "
        f"min {ordered[0]:.1f}, max {ordered[-1]:.1f}"
    )


def report(results: list[RunResult]) -> bool:
    """Print the per-run and summary tables (markdown); False when a regression got through."""
    print()
    print(
        "| seed | scenario | outcome | decided after (s) | at step | failed guards "
        "| candidate requests (wrong answers) | real s |"
    )
    print("| ---: | --- | --- | ---: | ---: | --- | ---: | ---: |")
    for r in sorted(results, key=lambda r: (r.scenario != "regression", r.seed)):
        decided = "-" if r.decided_s is None else f"{r.decided_s:.1f}"
        step = "-" if r.step is None else f"{r.step:.0f} %"
        print(
            f"| {r.seed} | {r.scenario} | {r.outcome} | {decided} | {step} "
            f"| {', '.join(r.failed) or '-'} | {r.candidate_requests} ({r.candidate_wrong}) "
            f"| {r.real_s:.1f} |"
        )
    regression = [r for r in results if r.scenario == "regression"]
    equal = [r for r in results if r.scenario == "equal"]
    print()
    print("| scenario | runs | outcome | first candidate request → decision (virtual s) |")
    print("| --- | ---: | --- | --- |")
    ok = True
    if regression:
        rolled = [r for r in regression if r.outcome == "rolled_back"]
        by_step = Counter(f"{r.step:.0f} %" for r in rolled if r.step is not None)
        by_guard = Counter(g for r in rolled for g in r.failed)
        steps = ", ".join(f"{k}: {v}" for k, v in sorted(by_step.items()))
        guards = ", ".join(f"{k} {v}" for k, v in by_guard.most_common())
        served = [r.candidate_requests for r in rolled] or [0]
        wrong = [r.candidate_wrong for r in rolled] or [0]
        times = [r.decided_s for r in rolled if r.decided_s is not None]
        print(
            f"| regression (1.1.0) | {len(regression)} "
            f"| rolled back {len(rolled)}/{len(regression)}; at step {steps}; "
            f"failed: {guards}; candidate requests before the rollback: median "
            f"{statistics.median(served):.0f} (wrong answers {statistics.median(wrong):.0f}) "
            f"| {quantiles(times)} |"
        )
        ok = len(rolled) == len(regression)
    if equal:
        false = [r for r in equal if r.outcome == "rolled_back"]
        done = [r for r in equal if r.outcome == "completed"]
        reasons = Counter(g for r in false for g in r.failed)
        upper = clopper_pearson_upper(len(false), len(equal))
        why = f" ({', '.join(f'{k} {v}' for k, v in reasons.most_common())})" if false else ""
        times = [r.decided_s for r in done if r.decided_s is not None]
        print(
            f"| equal (1.2.0) | {len(equal)} "
            f"| false rollbacks {len(false)}/{len(equal)}{why}, 95 % upper bound {upper:.0%}; "
            f"completed (promoted) {len(done)}/{len(equal)} | {quantiles(times)} |"
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="seeded runs per scenario")
    parser.add_argument("--seed", type=int, default=1, help="the first run's seed")
    parser.add_argument("--rate", type=float, default=70.0, help="requests per virtual second")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--scenarios", default="regression,equal")
    parser.add_argument(
        "--interval-s", type=float, default=None, help="override the files' ramp.interval_s"
    )
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    jobs = [
        (scenario, args.seed + i, args.rate, args.concurrency, args.interval_s)
        for scenario in scenarios
        for i in range(args.runs)
    ]
    started = time.perf_counter()
    print(
        f"{len(jobs)} runs ({', '.join(scenarios)}), {args.rate:g} requests per virtual second, "
        f"{args.jobs} processes"
    )
    results: list[RunResult] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for result in pool.map(one_run, jobs):
            results.append(result)
            decided = "-" if result.decided_s is None else f"{result.decided_s:.1f} s"
            print(
                f"  {result.scenario:10} seed {result.seed:3}: {result.outcome:11} {decided:>8}"
                f"  ({result.requests} requests, {result.real_s:.1f} s real)",
                flush=True,
            )
    ok = report(results)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
