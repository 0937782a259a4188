"""Shared by the CLI tests: a keel.yaml on a temp SQLite file and stored requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from click.testing import Result

from keel.telemetry import AttemptRecord, RequestRecord, StageRecord, Usage

Invoke = Callable[..., Result]  # ``keel ARGS -c keel.yaml`` (see conftest.keel)

NOW = time.time()
DAY = 86_400.0

CONFIG: dict[str, Any] = {
    "providers": {"sim": {"kind": "simulator", "seed": 7, "default_answer": "fresh answer"}},
    "models": [
        {"alias": "fast", "deployments": [{"provider": "sim", "model": "model-a"}]},
        {"alias": "smart", "deployments": [{"provider": "sim", "model": "model-b"}]},
    ],
    # Only model-a has a price: model-b's cost is unknown, never $0.
    "prices": {"sim/model-a": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}},
    "telemetry": {"log": {"destination": "off"}},
}


def write_config(tmp_path: Path) -> str:
    path = tmp_path / "keel.yaml"
    raw = {"database_url": f"sqlite:///{tmp_path / 'keel.db'}", **CONFIG}
    # safe_dump quotes "off", which bare YAML would read as false.
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def make_record(request_id: str, **changes: Any) -> RequestRecord:
    """A successful chat request on fast → sim/model-a with captured content."""
    base = RequestRecord(
        request_id=request_id,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="b7ad6b7169203331",
        parent_span_id=None,
        started_at=NOW - 60,
        operation="chat",
        stream=False,
        http_status=200,
        status="ok",
        error_type=None,
        tenant="acme",
        key_id=1,
        end_user="u-1",
        feature="support",
        metadata={"feature": "support"},
        alias="fast",
        served_alias="fast",
        deployment="sim/model-a",
        provider="sim",
        provider_model="model-a",
        response_model="model-a",
        finish_reasons=("stop",),
        usage=Usage(input_tokens=100, output_tokens=20, cached_input_tokens=40),
        cost_usd=0.14,
        latency_ms=420.0,
        ttft_ms=None,
        attempts=(AttemptRecord("fast", "sim/model-a", "sim", "model-a", "ok", 200, 12.0, 400.0),),
        stages=(
            StageRecord("parse", 0.0, 1.0),
            StageRecord("auth", 1.0, 2.0),
            StageRecord("model", 3.0, 0.5),
            StageRecord("route", 3.5, 410.0),
        ),
        prompt_name="support",
        prompt_version="3",
        variant="B",
        request_body={
            "model": "fast",
            "messages": [{"role": "user", "content": "What is Keel?"}],
            "metadata": {"feature": "support"},
        },
        response_text="stored answer",
    )
    return replace(base, **changes)


def failed_over(request_id: str, **changes: Any) -> RequestRecord:
    """An error after a 503 and a fallback attempt, with unknown cost."""
    return make_record(
        request_id,
        http_status=502,
        status="error",
        error_type="provider_all_upstreams_failed",
        served_alias="smart",
        deployment=None,
        provider=None,
        provider_model="model-b",
        usage=Usage(),
        cost_usd=None,
        latency_ms=2500.0,
        attempts=(
            AttemptRecord(
                "fast", "sim/model-a", "sim", "model-a", "provider_unavailable", 503, 10.0, 300.0
            ),
            AttemptRecord(
                "smart", "sim/model-b", "sim", "model-b", "provider_timeout", None, 320.0, 2000.0
            ),
        ),
        stages=(StageRecord("auth", 0.0, 2.0), StageRecord("route", 5.0, 2490.0)),
        request_body=None,
        response_text=None,
        **changes,
    )


def one_error_line(result: Result) -> str:
    """The single stderr line of a refused command (exit 2)."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert len(lines) == 1, lines
    return lines[0]
