"""Keel rollouts, end to end on the simulator: a bad candidate rolled back, a good one promoted.

    .venv/bin/python examples/rollouts/run_demo.py

What it does, in a fresh temporary database (nothing outside it is touched):

1. creates a key, pushes the three versions of the `support-answer` prompt
   and points `production` at 1.0.0, all with the `keel` CLI;
2. starts the gateway (`keel serve`) on examples/rollouts/keel.yaml;
3. `keel rollout start experiments/support-next.yaml`: prompt 1.1.0, on a
   model that is a little slower and wrong on most refund questions;
4. sends traffic from simulated customers (httpx) and, like real users, a
   thumbs up or down on some answers (POST /v1/feedback), printing
   `keel rollout status` as the controller holds, advances or rolls back;
5. when the controller has rolled 1.1.0 back, prints why, with the numbers;
6. does the same with experiments/support-friendly.yaml (prompt 1.2.0, as
   good as 1.0.0), which ramps to 100 % and is promoted to `production`.

Options: --seed N (customers, questions, ratings and the simulators),
--workers N (concurrent customers, 12), --status-every S (4), --port P,
--keep (keep the temporary folder and print where it is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from keel.store import ExperimentStore, make_engine

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "keel.yaml"
PROMPT = "support-answer"
PHASE_TIMEOUT_S = 90.0

# What simulated customers ask, how often, and the right answer (the one the
# simulators in keel.yaml give when they are right). Refunds are the slice.
QUESTIONS: list[tuple[str, str, float]] = [
    (
        "Where is my refund? I returned the shoes last week.",
        "Refunds go back to the original card within 5 business days.",
        0.25,
    ),
    (
        "How long does a refund take?",
        "Refunds go back to the original card within 5 business days.",
        0.15,
    ),
    ("When will my order ship?", "Orders ship within 24 hours; tracking arrives by email.", 0.2),
    ("I forgot my password.", "Reset it from Settings > Security > Reset password.", 0.15),
    ("Where do I find my invoice?", "Invoices are emailed on the first day of each month.", 0.1),
    (
        "How do I cancel my plan?",
        "Cancel any time from Billing > Plan; you keep access until the period ends.",
        0.15,
    ),
]
CUSTOMERS = 2000
RATED = 0.5  # share of answers a customer rates
DOWN_IF_WRONG = 0.9  # chance of a thumbs down for a wrong answer
DOWN_IF_RIGHT = 0.04  # ... and for a right one (some people are never happy)

WIDTH = 120
console = Console(highlight=False, width=WIDTH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Keel:
    """The `keel` CLI and the `keel serve` process, on one config and database."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.env = {
            **os.environ,
            "KEEL_DATABASE_URL": f"sqlite:///{workdir / 'keel.db'}",
            "SIM_SEED": str(seed),
            "SIM_SEED_NEXT": str(seed + 1000),
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": str(WIDTH - 4),  # the CLI's tables, inside our panels
        }
        self.workdir = workdir
        self.server: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, show: bool = True) -> str:
        cmd = [sys.executable, "-m", "keel", *args, "-c", str(CONFIG)]
        done = subprocess.run(
            cmd, cwd=HERE, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        out = (done.stdout + done.stderr).rstrip()
        if show:
            console.print(Text(f"$ keel {' '.join(args)}", style="bold cyan"))
            if out:
                console.print(Text(out))
        if done.returncode != 0:
            raise SystemExit(f"keel {' '.join(args)} failed ({done.returncode}):\n{out}")
        return done.stdout

    def serve(self, port: int) -> str:
        log = (self.workdir / "gateway.log").open("ab")
        cmd = [sys.executable, "-m", "keel", "serve", "-c", str(CONFIG), "--port", str(port)]
        console.print(
            Text(f"$ keel serve -c keel.yaml --port {port} --log-level info", "bold cyan")
        )
        self.server = subprocess.Popen(
            [*cmd, "--log-level", "info"],
            cwd=HERE,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SystemExit("keel serve exited:\n" + self.log())
            try:
                if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("keel serve did not become ready:\n" + self.log())

    def log(self) -> str:
        return (self.workdir / "gateway.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.server is None or self.server.poll() is not None:
            return
        self.server.send_signal(signal.SIGTERM)
        try:
            self.server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(timeout=5)


@dataclass
class Tally:
    """What the customers saw, per variant (the driver's view, not Keel's)."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    refunds: Counter[str] = field(default_factory=Counter)
    refunds_wrong: Counter[str] = field(default_factory=Counter)
    rated: Counter[str] = field(default_factory=Counter)
    thumbs_down: Counter[str] = field(default_factory=Counter)

    def table(self) -> Table:
        title = f"what the simulated customers saw ({self.errors} errors, any variant)"
        table = Table(title=title, title_justify="left")
        for column in ("variant", "answers", "wrong refund answers", "thumbs down"):
            table.add_column(column, justify="left" if column == "variant" else "right")
        for variant in sorted(self.requests):
            refunds = self.refunds[variant]
            wrong = self.refunds_wrong[variant]
            rated = self.rated[variant]
            table.add_row(
                variant,
                str(self.requests[variant]),
                f"{wrong}/{refunds} ({wrong / refunds:.0%})" if refunds else "-",
                f"{self.thumbs_down[variant]}/{rated}" if rated else "-",
            )
        return table


class Customers:
    """Closed-loop simulated customers, and the thumbs they give after reading an answer."""

    def __init__(self, url: str, key: str, seed: int, workers: int) -> None:
        self.url = url
        self.key = key
        self.rng = random.Random(seed)
        self.workers = workers
        self.tally = Tally()
        self.feedback: asyncio.Queue[tuple[float, int, str, bool]] = asyncio.Queue()
        self.feedback_sent = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        limits = httpx.Limits(max_connections=self.workers + 4)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=15, limits=limits
        ) as client:
            raters = [asyncio.create_task(self._rater(client)) for _ in range(2)]
            # Customers finish the request they are waiting for, then leave.
            await asyncio.gather(*(self._customer(client) for _ in range(self.workers)))
            for task in raters:
                task.cancel()
            await asyncio.gather(*raters, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    async def _customer(self, client: httpx.AsyncClient) -> None:
        texts, answers, weights = zip(*QUESTIONS, strict=True)
        while not self._stop.is_set():
            i = self.rng.choices(range(len(texts)), weights=weights)[0]
            user = f"cust-{self.rng.randrange(CUSTOMERS):04d}"
            body = {
                "messages": [],
                "user": user,
                "prompt": {
                    "name": PROMPT,
                    "label": "production",
                    "variables": {"question": texts[i]},
                },
            }
            try:
                response = await client.post("/v1/chat/completions", json=body)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            if response.status_code != 200:
                self.tally.errors += 1  # an error answer does not name the variant
                continue
            variant = response.headers.get("x-keel-variant", "(none)")
            self.tally.requests[variant] += 1
            answer = response.json()["choices"][0]["message"]["content"]
            wrong = answer != answers[i]
            if "refund" in texts[i].lower():
                self.tally.refunds[variant] += 1
                self.tally.refunds_wrong[variant] += wrong
            if self.rng.random() < RATED:
                down = self.rng.random() < (DOWN_IF_WRONG if wrong else DOWN_IF_RIGHT)
                self.tally.rated[variant] += 1
                self.tally.thumbs_down[variant] += down
                request_id = response.headers["x-request-id"]
                # People read before they click: rate a moment later.
                await self.feedback.put((time.monotonic() + 0.3, 0, request_id, not down))

    async def _rater(self, client: httpx.AsyncClient) -> None:
        while True:
            due, tries, request_id, useful = await self.feedback.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            body = {"request_id": request_id, "score": useful}
            response = await client.post("/v1/feedback", json=body)
            if response.status_code == 404 and tries < 20:
                # The request's record is written in the background; try again shortly.
                await self.feedback.put((time.monotonic() + 0.2, tries + 1, request_id, useful))
            elif response.status_code == 201:
                self.feedback_sent += 1


def status(keel: Keel, name: str) -> dict[str, Any]:
    """`keel rollout status NAME --format json`, with the latest event and its numbers."""
    result: dict[str, Any] = json.loads(
        keel.run("rollout", "status", name, "--events", "1", "--format", "json", show=False)
    )
    return result


def current_status(store: ExperimentStore, name: str) -> str:
    """The experiment's status, read from the store (cheaper than a CLI call every 0.5 s)."""
    return str(store.get(name).status)


def guard_table(event: dict[str, Any]) -> Table:
    """The guards' tests at the decision, from the event's numbers."""
    numbers = event.get("numbers") or {}
    table = Table(
        title="guards at the decision (always-valid sequential tests)", title_justify="left"
    )
    for column in ("guard", "control", "candidate", "tested", "worse by at least", "p", "status"):
        table.add_column(column, justify="left" if column in ("guard", "tested") else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    for guard in numbers.get("guards", []):
        metric, allowance, worse = guard["metric"], guard["allowance"], guard.get("worse_by")
        if guard.get("scale") == "exceedance":  # p95: share of requests over a threshold
            control = f"{guard['control_value']:.0f} ms" if guard.get("control_value") else "-"
            candidate = (
                f"{guard['candidate_value']:.0f} ms" if guard.get("candidate_value") else "-"
            )
            threshold = guard.get("threshold_ms")
            tested = (
                f"share over {threshold:.0f} ms (control p95 +{allowance:.0%}): "
                f"{pct(guard.get('control_share_over_p95'))} → "
                f"{pct(guard.get('candidate_share_over_threshold'))}, allowed +0"
                if threshold is not None
                else f"p95 at most +{allowance:.0%}"
            )
        elif guard.get("scale") == "relative":
            control, candidate = str(guard.get("control_value")), str(guard.get("candidate_value"))
            tested = f"ratio, allowed +{allowance:.0%}"
        else:
            control, candidate = pct(guard.get("control_value")), pct(guard.get("candidate_value"))
            tested = f"difference, allowed +{allowance * 100:.1f} points"
        table.add_row(
            metric,
            control,
            candidate,
            tested,
            "-" if worse is None else f"{worse * 100:+.1f} points",
            f"{guard.get('p_value', 1.0):.2g}",
            guard.get("status", "-"),
        )
    return table


async def ramp(keel: Keel, url: str, api_key: str, file: str, args: argparse.Namespace) -> str:
    """Start the experiment in ``file``, drive traffic until it ends; its final status."""
    name = Path(file).stem
    console.print(Rule(f"[bold]rollout {name}"))
    keel.run("rollout", "start", file)
    customers = Customers(url, api_key, args.seed, args.workers)
    traffic = asyncio.create_task(customers.run())
    started = time.monotonic()
    next_print = started + args.status_every
    store = ExperimentStore(make_engine(keel.env["KEEL_DATABASE_URL"]))
    while time.monotonic() - started < PHASE_TIMEOUT_S:
        await asyncio.sleep(0.5)
        if await asyncio.to_thread(current_status, store, name) in ("rolled_back", "completed"):
            break
        if time.monotonic() >= next_print:
            next_print = time.monotonic() + args.status_every
            table = await asyncio.to_thread(
                keel.run, "rollout", "status", name, "--events", "1", show=False
            )
            elapsed = time.monotonic() - started
            console.print(Panel(Text(table.rstrip()), title=f"t = {elapsed:4.1f} s"))
    customers.stop()
    await traffic
    took = time.monotonic() - started
    state = status(keel, name)
    console.print(Text(f"t = {took:.1f} s: {name} is {state['status']}", style="bold"))
    keel.run("rollout", "status", name, "--events", "6")
    decision = state["events"][0] if state.get("events") else {}
    if state["status"] == "rolled_back":
        console.print(guard_table(decision))
    console.print(customers.tally.table())
    console.print(f"feedback sent: {customers.feedback_sent}")
    return str(state["status"])


async def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="keel-rollouts-"))
    keel = Keel(workdir, args.seed)
    try:
        console.print(Rule("[bold]setup"))
        created = json.loads(
            keel.run("keys", "create", "--tenant", "demo", "--format", "json", show=False)
        )
        console.print(Text("$ keel keys create --tenant demo --format json", style="bold cyan"))
        console.print(f"a key for tenant demo: {created['key_prefix']}… (in a throwaway database)")
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            keel.run("prompts", "push", f"prompts/{version}")
        keel.run(
            "prompts", "promote", PROMPT, "1.0.0", "--force", "--reason", "the demo's baseline"
        )
        url = keel.serve(args.port or free_port())
        first = await ramp(keel, url, created["key"], "experiments/support-next.yaml", args)
        second = await ramp(keel, url, created["key"], "experiments/support-friendly.yaml", args)
        console.print(Rule("[bold]afterwards"))
        keel.run("prompts", "history", PROMPT)
        keel.run("events", "--kind", "rollback")
        ok = first == "rolled_back" and second == "completed"
        verdict = "as expected" if ok else "NOT as expected"
        console.print(f"[bold]support-next: {first}; support-friendly: {second} ({verdict})[/bold]")
        return 0 if ok else 1
    finally:
        keel.stop()
        if args.keep:
            console.print(f"kept {workdir} (keel.db, gateway.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--status-every", type=float, default=4.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
