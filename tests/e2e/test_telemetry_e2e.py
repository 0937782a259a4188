"""Telemetry across real processes: `keel serve` + `keel sim`, driven by the openai SDK."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from e2e_support import Cluster

pytestmark = pytest.mark.e2e


def gateway_config(sim_url: str, **telemetry: Any) -> dict[str, Any]:
    return {
        "providers": {"sim": {"kind": "openai_compat", "base_url": f"{sim_url}/v1"}},
        "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "sim-fast"}]}],
        "prices": {
            "sim/sim-fast": {
                "input_per_mtok": 0.5,
                "output_per_mtok": 1.5,
                "cached_input_per_mtok": 0.25,
            }
        },
        "telemetry": {"log": {"destination": "off"}, **telemetry},
    }


def test_cost_and_tokens_agree_between_response_trace_and_rollup(cluster: Cluster) -> None:
    sim = cluster.sim("sim", kind="simulator", seed=5)
    gateway, key = cluster.gateway(gateway_config(sim.url, flush_interval_s=0.05))
    sdk = cluster.closing(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0))
    raw = sdk.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "price me"}],
        extra_body={"metadata": {"feature": "pricing"}},
    )
    reply = raw.parse()
    rid = raw.headers["x-request-id"]
    cost = float(raw.headers["x-keel-cost-usd"])
    assert reply.usage is not None
    assert cost == pytest.approx(
        (reply.usage.prompt_tokens * 0.5 + reply.usage.completion_tokens * 1.5) / 1e6
    )
    auth = {"authorization": f"Bearer {key}"}
    trace: dict[str, Any] = {}
    for _ in range(100):  # bounded: the writer flushes every 50 ms
        answer = httpx.get(f"{gateway.url}/v1/traces/{rid}", headers=auth)
        if answer.status_code == 200:
            trace = answer.json()
            break
        threading.Event().wait(0.05)
    assert trace["input_tokens"] == reply.usage.prompt_tokens
    assert trace["output_tokens"] == reply.usage.completion_tokens
    assert trace["cost_usd"] == pytest.approx(cost)
    report = cluster.keel("cost", "report", "--by", "tenant,feature", "--format", "json")
    assert report.returncode == 0, report.stderr
    assert '"pricing"' in report.stdout


TELEMETRY_PROCESS = "-m keel.api.telemetry_worker"


def child_pids(pid: int) -> list[int]:
    # Linux lists children by the thread that started them: here the writer thread.
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(c) for task in tasks for c in (task / "children").read_text().split()]


def cmdline(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return " ".join(a.decode() for a in args[1:3])


def test_sigterm_loses_no_accepted_request(cluster: Cluster, tmp_path: Path) -> None:
    sim = cluster.sim("sim", kind="simulator", seed=6)
    # A writer that would wait an hour: only the shutdown drain can store these rows.
    gateway, key = cluster.gateway(gateway_config(sim.url, flush_interval_s=3600))
    sdk = cluster.closing(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0))

    def one(i: int) -> str:
        raw = sdk.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": f"row {i}"}]
        )
        return raw.headers["x-request-id"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answered = set(pool.map(one, range(300)))
    assert gateway.proc is not None
    # The rows sit in the gateway's queue; its telemetry process (started by
    # the first batch of 100) stores them once the gateway drains on SIGTERM.
    children = child_pids(gateway.proc.pid)
    assert [cmdline(c) for c in children] == [TELEMETRY_PROCESS]
    gateway.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once it has shut down cleanly
    assert gateway.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    # ... and waited for that process to finish: nothing is left behind.
    assert [c for c in children if Path(f"/proc/{c}").exists()] == []

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'keel.db'}")
    try:
        with engine.connect() as connection:
            stored = {r for (r,) in connection.execute(sa.text("SELECT request_id FROM requests"))}
    finally:
        engine.dispose()
    assert answered <= stored
