"""What telemetry costs the gateway: throughput with it fully on against off.

Three ``keel serve`` processes on the same fixed upstream, measured in turns
in one run: one with telemetry on at its most expensive (every request
sampled and stored with its content, a JSON log line per request to a file,
metrics) as configured by default, with the log, store and export in the
telemetry process; the same with those sinks on the gateway's writer thread
(``telemetry.writer: thread``); and one with ``telemetry.enabled: false``.
The goal: on costs at most 15 % of the throughput, taken as the median over
rounds of each round's throughput against the "off" run beside it (the
order of the turns reverses every round). For the "on" gateway it
also splits CPU per request between the event-loop thread, the gateway's
other threads (the writer, mostly) and its telemetry process, which is where
to look first when the cost moves.

    .venv/bin/python bench/telemetry_overhead.py [--duration 3] [--rounds 8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import Procs, cpu_seconds, thread_cpu_seconds, tree
from overhead import Scenario, Target, measure, start_keel, start_upstream, warm_up
from rich.console import Console
from rich.table import Table

ON = """
telemetry:
  capture_content: true
  sampling: {{rate: 1.0}}
  log: {{destination: file, path: {log}}}
"""
THREAD = "  writer: thread\n"
OFF = """
telemetry:
  enabled: false
"""
GOAL = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=8, help="turns of every gateway per scenario")
    parser.add_argument("--concurrency", default="16,64")
    args = parser.parse_args()
    console = Console(width=170)
    tmp = Path(tempfile.mkdtemp(prefix="keel-telemetry-bench-"))
    procs = Procs(tmp)
    try:
        upstream = start_upstream(procs)
        gateways = {
            "off": OFF,
            "on": ON.format(log=tmp / "on.log"),
            "thread": ON.format(log=tmp / "thread.log") + THREAD,
        }
        targets = [
            start_keel(procs, tmp, upstream, 1, name=name, extra=extra)
            for name, extra in gateways.items()
        ]
        warm_up(targets, 2.0)
        table = Table(title="Telemetry on (100 % sampled, content, log, store) vs off")
        for column in (
            "scenario",
            "off req/s",
            "on req/s",
            "throughput cost [range over rounds]",
            "on, sinks on the thread: req/s",
            "cost",
            "CPU ms/req off / on / thread",
            "on: loop / writer thread / telemetry process µs/req",
            "errors",
        ):
            table.add_column(column, justify="right")
        for c in (int(x) for x in args.concurrency.split(",")):
            scenario = Scenario(f"c{c}", concurrency=c)
            runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
            for turn in range(args.rounds):
                # In turns, the order reversed every round (off, on, thread,
                # thread, on, off, ...): the VM's speed drifts by tens of
                # percent within a minute, and a fixed order would hand one
                # gateway the same side of every drift.
                for target in targets if turn % 2 == 0 else targets[::-1]:
                    runs[target.name].append(_measure_split(target, scenario, args.duration))

            def mid(name: str, key: str, runs: dict[str, list[dict[str, float]]] = runs) -> float:
                return median(r[key] for r in runs[name])

            # Each round's gateway against the "off" run beside it, then the
            # median over rounds: a pair measured seconds apart shares its drift.
            paired = {
                name: sorted(
                    1 - r["rps"] / o["rps"] for r, o in zip(runs[name], runs["off"], strict=True)
                )
                for name in ("on", "thread")
            }
            cost = {name: median(costs) for name, costs in paired.items()}
            table.add_row(
                scenario.label,
                f"{mid('off', 'rps'):.0f}",
                f"{mid('on', 'rps'):.0f}",
                f"{cost['on']:.1%} ({'ok' if cost['on'] <= GOAL else 'over the 15 % goal'})"
                f" {_spread(paired['on'])}",
                f"{mid('thread', 'rps'):.0f}",
                f"{cost['thread']:.1%} {_spread(paired['thread'])}",
                " / ".join(f"{mid(t.name, 'cpu_ms_per_req'):.3f}" for t in targets),
                f"{mid('on', 'loop_us'):.0f} / {mid('on', 'others_us'):.0f} / "
                f"{mid('on', 'children_us'):.0f}",
                str(sum(int(r["errors"]) for rs in runs.values() for r in rs)),
            )
        console.print(table)
        procs.stop_all()  # SIGTERM: the 'on' gateways drain their queues into their stores
        stored = {name: _count(tmp / name / "keel.db") for name in ("on", "thread")}
        console.print(f"requests stored: {stored}")
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def _spread(costs: list[float]) -> str:
    """The range of sorted per-round costs, as printed beside their median."""
    return f"[{costs[0]:.0%}..{costs[-1]:.0%}]"


def _measure_split(target: Target, scenario: Scenario, duration: float) -> dict[str, float]:
    """``measure``, plus CPU per request of the event loop, the other threads and the children."""
    assert target.pid is not None
    children = tree(target.pid)[1:]
    loop_before, others_before = thread_cpu_seconds(target.pid)
    children_before = cpu_seconds(children)
    result = measure(target, scenario, duration)
    loop_after, others_after = thread_cpu_seconds(target.pid)
    ok = max(1.0, float(result["ok"]))
    result["loop_us"] = (loop_after - loop_before) * 1e6 / ok
    result["others_us"] = (others_after - others_before) * 1e6 / ok
    result["children_us"] = (cpu_seconds(children) - children_before) * 1e6 / ok
    return result


def _count(db: Path) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT count(*) FROM requests")).scalar_one())
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
