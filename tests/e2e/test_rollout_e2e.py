"""A ramp whose candidate fails more often is rolled back by the controller, and both
real gateway processes stop serving it within 5 s of the decision."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from e2e_support import Cluster, Process
from keel.store import ExperimentStore, make_engine

pytestmark = pytest.mark.e2e

CONFIG = {
    "providers": {
        "sim": {"kind": "simulator", "seed": 1},
        "flaky": {"kind": "simulator", "seed": 2, "error_rate": 0.5},
    },
    "models": [
        {"alias": "fast", "deployments": [{"provider": "sim", "model": "small"}], "retries": 0},
        {"alias": "fresh", "deployments": [{"provider": "flaky", "model": "new"}], "retries": 0},
    ],
    "telemetry": {"log": {"destination": "off"}, "flush_interval_s": 0.2},
}

RAMP = {
    "name": "fresh-model",
    "alias": "fast",
    "unit": "request",
    "variants": [
        {"name": "control", "control": True, "alias": "fast"},
        {"name": "fresh", "alias": "fresh"},
    ],
    "guards": [{"metric": "error_rate", "max_increase": 0.05}],
    "ramp": {"steps": [50, 100], "hold_s": 3600, "min_samples": 20, "interval_s": 1},
}


def ask(client: httpx.Client, gateway: Process, key: str) -> httpx.Response:
    return client.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fast", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"authorization": f"Bearer {key}"},
    )


def test_a_failing_candidate_is_rolled_back_everywhere(cluster: Cluster, tmp_path: Path) -> None:
    gateways, key = cluster.gateways(CONFIG, 2)
    spec = tmp_path / "ramp.yaml"
    spec.write_text(yaml.safe_dump(RAMP))
    started = cluster.keel("rollout", "start", str(spec))
    assert started.returncode == 0, started.stderr
    store = ExperimentStore(make_engine(f"sqlite:///{tmp_path / 'keel.db'}"))
    decided: datetime | None = None
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + 60
        while decided is None and time.monotonic() < deadline:
            for gateway in gateways:
                ask(client, gateway, key)
            record = store.get("fresh-model")
            if record.status == "rolled_back":
                decided = store.events("fresh-model")[0].at
        assert decided is not None, "the controller never rolled back"
        # From the decision until both gateways serve only the control:
        pending = list(gateways)
        while pending and time.monotonic() < deadline:
            pending = [g for g in pending if "x-keel-experiment" in ask(client, g, key).headers]
        took = (datetime.now(UTC) - decided).total_seconds()
    assert not pending
    assert took <= 5, f"gateways still served the candidate {took:.1f} s after the rollback"
    rollback = store.events("fresh-model")[0]
    assert rollback.action == "rollback" and rollback.actor == "controller"
    assert any("error_rate" in reason for reason in rollback.reasons)
