"""Gateway overhead: the same load straight at an upstream and through ``keel serve``.

Starts ``bench/fixed_upstream.py`` (a fixed-body server, so the upstream costs
next to nothing), a ``keel serve`` in front of it (temp keel.yaml, SQLite in a
temp dir, one ``openai_compat`` provider, no retries, a breaker that never
opens) and, when LiteLLM is installed, LiteLLM's proxy on the same upstream
with 2 workers and its production settings. Then, per scenario, it drives the
same load at each target in turn from a separate load-generator process
(``bench/_load.py``) and prints requests/s, p50/p99 and the latency each
gateway adds over the direct call measured in the same run, with gateway CPU
per request (from /proc utime+stime), resident memory per worker and the time
from spawn to the first healthy answer.

    .venv/bin/python bench/overhead.py                # full run, ~2.5 min
    .venv/bin/python bench/overhead.py --quick        # ~40 s
    .venv/bin/python bench/overhead.py --scenarios c1,r100 --duration 10
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import (
    BENCH,
    PYTHON,
    Procs,
    cpu_seconds,
    free_port,
    rss_mib,
    run_load,
    telemetry_of,
    tree,
    wait_ready,
    workers_of,
)
from rich.console import Console
from rich.table import Table

DEFAULT_SCENARIOS = "c1,c16,c64,r100,r300,r500"
QUICK_SCENARIOS = "c1,c64,r100,r300"
LITELLM_KEY = "sk-bench-master-key-0000"

console = Console(width=160)


@dataclass
class Scenario:
    name: str
    concurrency: int | None = None
    rate: float | None = None

    @property
    def label(self) -> str:
        if self.rate:
            return f"open {self.rate:g} req/s"
        return f"closed c={self.concurrency}"


@dataclass
class Target:
    name: str
    port: int
    path: str
    key: str | None = None
    pid: int | None = None
    ready_s: float | None = None
    rss_mib: list[float] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def parse_scenarios(spec: str) -> list[Scenario]:
    out = []
    for raw in spec.split(","):
        name = raw.strip()
        if name.startswith("c") and name[1:].isdigit():
            out.append(Scenario(name, concurrency=int(name[1:])))
        elif name.startswith("r") and name[1:].replace(".", "", 1).isdigit():
            out.append(Scenario(name, rate=float(name[1:])))
        elif name:
            raise SystemExit(f"unknown scenario {name!r}: use cN (closed loop) or rN (open loop)")
    return out


# --- starting the three servers -------------------------------------------------


def start_upstream(procs: Procs) -> Target:
    port = free_port()
    proc = procs.spawn("upstream", [PYTHON, str(BENCH / "fixed_upstream.py"), "--port", str(port)])
    wait_ready(proc, port, "/healthz", time.perf_counter(), 10)
    return Target("direct", port, "/v1/chat/completions", pid=proc.pid)


KEEL_YAML = """\
server: {{host: 127.0.0.1, port: {port}}}
database_url: sqlite:///{db}
providers:
  fixed:
    kind: openai_compat
    base_url: http://127.0.0.1:{upstream}/v1
    api_key: sk-upstream-bench
models:
  - alias: bench
    deployments: [{{provider: fixed, model: fixed-model}}]
    timeout_s: 30
    retries: 0
routing:
  breaker: {{min_requests: 1000000000}}
"""


def _keel_cli() -> list[str]:
    script = Path(PYTHON).parent / "keel"
    return [str(script)] if script.exists() else [PYTHON, "-m", "keel"]


def start_keel(
    procs: Procs, tmp: Path, upstream: Target, workers: int, *, name: str = "keel", extra: str = ""
) -> Target:
    """``keel serve`` on the fixed upstream; ``extra`` is appended to its keel.yaml."""
    port = free_port()
    home = tmp / name
    home.mkdir(exist_ok=True)
    config = home / "keel.yaml"
    text = KEEL_YAML.format(port=port, db=home / "keel.db", upstream=upstream.port)
    config.write_text(text + extra)
    created = subprocess.run(
        [*_keel_cli(), "keys", "create", "--tenant", "bench", "-c", str(config), "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key = json.loads(created.stdout)["key"]
    cmd = [*_keel_cli(), "serve", "-c", str(config), "--port", str(port)]
    cmd += ["--log-level", "warning", "--workers", str(workers)]
    started = time.perf_counter()
    proc = procs.spawn(name, cmd)
    try:
        ready = wait_ready(proc, port, "/healthz", started, 30)
    except RuntimeError as exc:
        raise SystemExit(f"keel serve did not start: {exc}\n{procs.log_tail(name)}") from None
    return Target(name, port, "/v1/chat/completions", key=key, pid=proc.pid, ready_s=ready)


def start_floor(procs: Procs, upstream: Target) -> Target:
    """The cheapest pass-through our libraries allow (``micro.passthrough_app``).

    Measured beside Keel so the machine's own cost of one extra hop (process
    wake-ups, loopback) is visible: what Keel adds beyond the floor is Keel's.
    """
    port = free_port()
    cmd = [PYTHON, "-m", "uvicorn", "micro:passthrough_app", "--app-dir", str(BENCH)]
    cmd += ["--port", str(port), "--http", "httptools", "--loop", "uvloop"]
    cmd += ["--log-level", "warning", "--no-access-log", "--lifespan", "off"]
    env = {"BENCH_UPSTREAM": f"http://127.0.0.1:{upstream.port}/v1/chat/completions"}
    started = time.perf_counter()
    proc = procs.spawn("floor", cmd, env)
    ready = wait_ready(proc, port, "/healthz", started, 30, any_status=True)
    return Target("floor", port, "/v1/chat/completions", pid=proc.pid, ready_s=ready)


LITELLM_YAML = """\
model_list:
  - model_name: bench
    litellm_params:
      model: openai/fixed-model
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: sk-upstream-bench
general_settings:
  master_key: {key}
  proxy_batch_write_at: 60
  disable_error_logs: true
litellm_settings:
  request_timeout: 600
  set_verbose: false
  json_logs: true
"""


def litellm_python(explicit: str | None) -> str | None:
    """The interpreter that has LiteLLM: ``--litellm-python``, else this one if it can."""
    if explicit:
        return explicit
    return PYTHON if importlib.util.find_spec("litellm") is not None else None


def start_litellm(procs: Procs, tmp: Path, upstream: Target, python: str) -> Target:
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(LITELLM_YAML.format(upstream=upstream.port, key=LITELLM_KEY))
    cli = Path(python).parent / "litellm"
    cmd = [str(cli), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", "2"]
    env = {"LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "JSON_LOGS": "True"}
    started = time.perf_counter()
    proc = procs.spawn("litellm", cmd, env)
    try:
        ready = wait_ready(proc, port, "/health/liveliness", started, 120)
    except RuntimeError as exc:
        raise SystemExit(f"litellm did not start: {exc}\n{procs.log_tail('litellm')}") from None
    return Target(
        "litellm", port, "/v1/chat/completions", key=LITELLM_KEY, pid=proc.pid, ready_s=ready
    )


# --- measuring -------------------------------------------------------------------


def measure(target: Target, scenario: Scenario, duration: float) -> dict[str, Any]:
    assert target.pid is not None
    pids = tree(target.pid)
    before = cpu_seconds(pids)
    summary = run_load(
        target.url,
        key=target.key,
        concurrency=scenario.concurrency,
        rate=scenario.rate,
        duration=duration,
    )
    used = cpu_seconds(pids) - before
    summary["cpu_ms_per_req"] = used * 1000 / summary["ok"] if summary["ok"] else math.nan
    summary["cpu_cores"] = used / duration
    target.results[scenario.name] = summary
    return summary


def warm_up(targets: list[Target], seconds: float) -> None:
    for target in targets:
        run_load(target.url, key=target.key, concurrency=16, duration=seconds)


# --- reporting ---------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def results_table(scenarios: list[Scenario], direct: Target, gateways: list[Target]) -> Table:
    table = Table(title="Throughput and latency (ms) — same upstream, same run")
    table.add_column("scenario")
    for name in ["direct", *(g.name for g in gateways)]:
        table.add_column(f"{name}\nreq/s", justify="right")
    for name in ["direct", *(g.name for g in gateways)]:
        table.add_column(f"{name}\np50 / p99", justify="right")
    for s in scenarios:
        rows = [direct.results[s.name], *(g.results[s.name] for g in gateways)]
        table.add_row(
            s.label,
            *(_f(r["rps"], 0) for r in rows),
            *(f"{_f(r['p50_ms'])} / {_f(r['p99_ms'])}" for r in rows),
        )
    return table


def overhead_table(scenarios: list[Scenario], direct: Target, gateways: list[Target]) -> Table:
    table = Table(title="Added by the gateway (gateway minus direct), CPU per request, errors")
    table.add_column("scenario")
    for g in gateways:
        table.add_column(f"{g.name}\n+p50 ms", justify="right")
        table.add_column(f"{g.name}\n+p99 ms", justify="right")
        table.add_column(f"{g.name}\nCPU ms/req", justify="right")
        table.add_column(f"{g.name}\nerrors", justify="right")
    for s in scenarios:
        base = direct.results[s.name]
        cells = []
        for g in gateways:
            r = g.results[s.name]
            cells += [
                _f(r["p50_ms"] - base["p50_ms"]),
                _f(r["p99_ms"] - base["p99_ms"]),
                _f(r["cpu_ms_per_req"]),
                str(r["errors"]),
            ]
        table.add_row(s.label, *cells)
    return table


def goals(keel: Target, direct: Target) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for every goal whose scenario ran."""
    out: list[tuple[str, str, bool | None]] = []

    def added(name: str, key: str) -> float | None:
        if name not in keel.results:
            return None
        return float(keel.results[name][key] - direct.results[name][key])

    for name in ("c1", "r100"):
        p50, p99 = added(name, "p50_ms"), added(name, "p99_ms")
        if p50 is not None and p99 is not None:
            out.append(
                (
                    f"{name}: added p50 <= 1 ms, p99 <= 5 ms",
                    f"{p50:.2f} / {p99:.2f}",
                    p50 <= 1 and p99 <= 5,
                )
            )
    if "r300" in keel.results:
        p99 = keel.results["r300"]["p99_ms"]
        extra = added("r300", "p99_ms") or 0.0
        out.append(("r300: p99 <= 10 ms", f"{p99:.2f} (added {extra:.2f})", p99 <= 10))
    clean = [r for r in keel.results.values() if r["errors"] == 0]
    best = max((r["rps"] for r in clean), default=0.0)
    out.append((">= 1000 req/s with no errors", f"{best:.0f}", best >= 1000))
    loaded = [keel.results[n] for n in ("c64", "c16", "r500", "r300") if n in keel.results]
    if loaded:
        cpu = loaded[0]["cpu_ms_per_req"]
        out.append(("CPU per request <= 1 ms (busiest run)", f"{cpu:.3f} ms", cpu <= 1))
    worst = max(keel.rss_mib, default=0.0)
    out.append(
        ("RSS <= 150 MiB per worker, telemetry process included", f"{worst:.0f} MiB", worst <= 150)
    )
    if keel.ready_s is not None:
        out.append(
            ("worker ready < 1 s (spawn → /healthz)", f"{keel.ready_s:.2f} s", keel.ready_s < 1)
        )
    return out


def report(
    scenarios: list[Scenario], direct: Target, gateways: list[Target], skipped: str | None
) -> None:
    console.print(results_table(scenarios, direct, gateways))
    console.print(overhead_table(scenarios, direct, gateways))
    for g in gateways:
        rss = ", ".join(f"{m:.0f}" for m in g.rss_mib)
        console.print(
            f"[bold]{g.name}[/]: ready in {_f(g.ready_s or math.nan)} s; "
            f"RSS per worker after load (with its telemetry process): {rss} MiB"
        )
    keel = next(g for g in gateways if g.name == "keel")
    table = Table(title="Keel goals")
    for col in ("goal", "measured", "met"):
        table.add_column(col)
    for goal, value, met in goals(keel, direct):
        table.add_row(goal, value, "[green]yes[/]" if met else "[red]NO[/]")
    console.print(table)
    if skipped:
        console.print(f"[yellow]LiteLLM skipped:[/] {skipped}")


# --- main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Keel gateway overhead benchmark")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (5)")
    parser.add_argument("--scenarios", default=None, help=f"default {DEFAULT_SCENARIOS}")
    parser.add_argument("--workers", type=int, default=1, help="keel serve --workers (1)")
    parser.add_argument("--quick", action="store_true", help=f"2 s runs of {QUICK_SCENARIOS}")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at c=16 per target")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM even if present")
    parser.add_argument("--litellm-python", default=None, help="interpreter with litellm[proxy]")
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.scenarios = args.scenarios or (QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scenarios = parse_scenarios(args.scenarios)
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    procs = Procs(tmp)
    skipped: str | None = None
    try:
        direct = start_upstream(procs)
        keel = start_keel(procs, tmp, direct, args.workers)
        gateways = [keel, start_floor(procs, direct)]
        python = None if args.no_litellm else litellm_python(args.litellm_python)
        if python is not None:
            gateways.append(start_litellm(procs, tmp, direct, python))
        else:
            skipped = (
                "--no-litellm"
                if args.no_litellm
                else "litellm is not installed here; `pip install -e '.[bench]'` (best in a "
                "separate venv, then pass --litellm-python PATH/TO/python)"
            )
        targets = [direct, *gateways]
        console.print(
            f"upstream :{direct.port}  keel :{keel.port} (workers={args.workers}, ready in "
            f"{keel.ready_s:.2f} s)  runs of {args.duration:g} s; logs in {tmp}"
        )
        warm_up(targets, args.warmup)
        for s in scenarios:
            for target in targets:
                r = measure(target, s, args.duration)
                console.print(
                    f"  {s.label:<18} {target.name:<8} {r['rps']:8.0f} req/s  "
                    f"p50 {r['p50_ms']:7.2f}  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}"
                )
        for g in gateways:
            assert g.pid is not None
            # A Keel worker's telemetry process is memory the worker needs: counted with it.
            g.rss_mib = [
                rss_mib(p) + sum(rss_mib(t) for t in telemetry_of(p)) for p in workers_of(g.pid)
            ]
        report(scenarios, direct, gateways, skipped)
        if args.json:
            raw = {
                t.name: {"ready_s": t.ready_s, "rss_mib": t.rss_mib, "results": t.results}
                for t in targets
            }
            args.json.write_text(json.dumps(raw, indent=2))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
