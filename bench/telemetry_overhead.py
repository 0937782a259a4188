"""What telemetry costs the gateway: throughput with it fully on against off.

Two ``keel serve`` processes on the same fixed upstream, measured in turns in
one run: one with telemetry on at its most expensive (every request sampled
and stored with its content, a JSON log line per request to a file, metrics),
one with ``telemetry.enabled: false``. The goal: on costs at most 15 % of the
throughput. For the "on" gateway it also splits CPU per request between the
event-loop thread and the others (the telemetry writer, mostly), which is
where to look first when the cost moves.

    .venv/bin/python bench/telemetry_overhead.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import Procs, thread_cpu_seconds
from overhead import Scenario, Target, measure, start_keel, start_upstream, warm_up
from rich.console import Console
from rich.table import Table

ON = """
telemetry:
  capture_content: true
  sampling: {{rate: 1.0}}
  log: {{destination: file, path: {log}}}
"""
OFF = """
telemetry:
  enabled: false
"""
GOAL = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="on/off turns per scenario")
    parser.add_argument("--concurrency", default="16,64")
    args = parser.parse_args()
    console = Console(width=150)
    tmp = Path(tempfile.mkdtemp(prefix="keel-telemetry-bench-"))
    procs = Procs(tmp)
    try:
        upstream = start_upstream(procs)
        on = start_keel(procs, tmp, upstream, 1, name="on", extra=ON.format(log=tmp / "req.log"))
        off = start_keel(procs, tmp, upstream, 1, name="off", extra=OFF)
        warm_up([on, off], 2.0)
        table = Table(title="Telemetry on (100 % sampled, content, log, store) vs off")
        for column in (
            "scenario",
            "off req/s",
            "on req/s",
            "throughput cost",
            "off CPU ms/req",
            "on CPU ms/req",
            "on: loop / other threads µs/req",
            "errors on/off",
        ):
            table.add_column(column, justify="right")
        for c in (int(x) for x in args.concurrency.split(",")):
            scenario = Scenario(f"c{c}", concurrency=c)
            runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
            for _ in range(args.rounds):
                for target in (off, on):  # alternate so drift hits both alike
                    runs[target.name].append(_measure_split(target, scenario, args.duration))
            rps = {name: median(r["rps"] for r in rs) for name, rs in runs.items()}
            cpu = {name: median(r["cpu_ms_per_req"] for r in rs) for name, rs in runs.items()}
            errors = {name: sum(int(r["errors"]) for r in rs) for name, rs in runs.items()}
            cost = 1 - rps["on"] / rps["off"]
            table.add_row(
                scenario.label,
                f"{rps['off']:.0f}",
                f"{rps['on']:.0f}",
                f"{cost:.1%} ({'ok' if cost <= GOAL else 'over the 15 % goal'})",
                f"{cpu['off']:.3f}",
                f"{cpu['on']:.3f}",
                f"{median(r['loop_us'] for r in runs['on']):.0f} / "
                f"{median(r['others_us'] for r in runs['on']):.0f}",
                f"{errors['on']}/{errors['off']}",
            )
        console.print(table)
        procs.stop_all()  # SIGTERM: the 'on' gateway drains its queue into the store
        console.print(f"requests stored by the 'on' gateway: {_count(tmp / 'on' / 'keel.db')}")
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def _measure_split(target: Target, scenario: Scenario, duration: float) -> dict[str, float]:
    """``measure``, plus CPU per request of the event-loop thread and of the rest."""
    assert target.pid is not None
    loop_before, others_before = thread_cpu_seconds(target.pid)
    result = measure(target, scenario, duration)
    loop_after, others_after = thread_cpu_seconds(target.pid)
    ok = max(1.0, float(result["ok"]))
    result["loop_us"] = (loop_after - loop_before) * 1e6 / ok
    result["others_us"] = (others_after - others_before) * 1e6 / ok
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
