"""``keel rollout`` and ``keel experiment``: lifecycle, status, report, size, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import Invoke, failed_over, make_record, one_error_line
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.cli.tenants import default_actor
from keel.experiments.sizing import sample_size

CANARY: dict[str, Any] = {
    "name": "smart-canary",
    "description": "Move traffic from fast to smart.",
    "alias": "fast",
    "unit": "request",
    "variants": [
        {"name": "control", "control": True, "alias": "fast"},
        {"name": "candidate", "alias": "smart"},
    ],
    "guards": [{"metric": "error_rate", "max_increase": 0.02}],
    "ramp": {"steps": [5, 50, 100], "hold_s": 60, "min_samples": 50},
}

AB: dict[str, Any] = {
    "name": "ab-models",
    "alias": "fast",
    "variants": [
        {"name": "a", "control": True, "alias": "fast"},
        {"name": "b", "alias": "smart"},
    ],
    "split": {"a": 50, "b": 50},
}


def write_file(tmp_path: Path, doc: dict[str, Any], name: str = "experiment.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return str(result.stdout)


def test_start_status_pause_resume_advance_rollback(keel: Invoke, tmp_path: Path) -> None:
    started = ok(keel("rollout", "start", write_file(tmp_path, CANARY)))
    assert "started ramp smart-canary: step 1/3 (5 %)" in started
    assert "control 95 %, candidate 5 %" in started
    assert "within 5 seconds" in started

    listing = ok(keel("rollout", "status"))
    assert "smart-canary" in listing and "running" in listing
    assert f"start by {default_actor()}" in listing

    detail = ok(keel("rollout", "status", "smart-canary"))
    assert "ramp smart-canary" in detail and "this step's traffic" in detail
    assert "control (control)" in detail and "last decision: start" in detail

    assert "paused smart-canary: paused" in ok(keel("rollout", "pause", "smart-canary"))
    assert "resumed smart-canary: running" in ok(keel("rollout", "resume", "smart-canary"))
    advanced = ok(keel("rollout", "advance", "smart-canary", "--actor", "cli:ops"))
    assert "step 2/3 (50 %)" in advanced and "candidate 50 %" in advanced
    rolled = ok(keel("rollout", "rollback", "smart-canary", "--reason", "p95 up 40 %"))
    assert "rolled back smart-canary: rolled_back" in rolled
    assert "control 100 %, candidate 0 %" in rolled

    doc = json.loads(ok(keel("rollout", "status", "smart-canary", "--format", "json")))
    assert doc["status"] == "rolled_back" and doc["mode"] == "ramp"
    assert [e["action"] for e in doc["events"]] == [
        "rollback",
        "advance",
        "resume",
        "pause",
        "start",
    ]
    assert doc["events"][0]["reasons"] == ["p95 up 40 %"]
    assert doc["events"][1]["actor"] == "cli:ops"
    assert set(doc["metrics"]) == {"control", "candidate"}


def test_json_output_of_changes(keel: Invoke, tmp_path: Path) -> None:
    doc = json.loads(ok(keel("rollout", "start", write_file(tmp_path, AB), "--format", "json")))
    assert doc["shares"] == {"a": 50.0, "b": 50.0} and doc["mode"] == "split"
    paused = json.loads(ok(keel("rollout", "pause", "ab-models", "--format", "json")))
    assert paused["status"] == "paused" and paused["event"]["action"] == "pause"
    listing = json.loads(ok(keel("rollout", "status", "--format", "json")))
    assert [(r["name"], r["last_event"]["action"]) for r in listing] == [("ab-models", "pause")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ramp": {"steps": [5, 101]}}, "ramp.steps[1]: Input should be less than or equal to 100"),
        ({"colour": "blue"}, "colour: unknown field"),
        ({"alias": "huge"}, "alias: unknown model alias 'huge'; keel.yaml defines fast, smart"),
    ],
)
def test_a_bad_experiment_file_is_one_line_naming_the_field(
    keel: Invoke, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    line = one_error_line(keel("rollout", "start", write_file(tmp_path, {**CANARY, **change})))
    assert expected in line


def test_refusals_exit_with_one_line(keel: Invoke, tmp_path: Path) -> None:
    path = write_file(tmp_path, CANARY)
    ok(keel("rollout", "start", path))
    assert "already running" in one_error_line(keel("rollout", "start", path))
    missing = keel("rollout", "pause", "nope")
    assert missing.exit_code == 2 and "no experiment nope" in missing.stderr
    needs_reason = keel("rollout", "rollback", "smart-canary")
    assert needs_reason.exit_code == 2 and "--reason" in needs_reason.stderr
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("name: [unclosed\n")
    assert "not valid YAML" in one_error_line(keel("rollout", "start", str(not_yaml)))


def test_report_compares_variants_with_intervals_and_tests(
    keel: Invoke, tmp_path: Path, write: Callable[..., None]
) -> None:
    ok(keel("rollout", "start", write_file(tmp_path, AB)))
    tagged = {"experiment": "ab-models"}
    records = [
        *(make_record(f"a{i}", variant="a", latency_ms=400.0 + i % 9, **tagged) for i in range(60)),
        *(failed_over(f"ae{i}", variant="a", **tagged) for i in range(2)),
        *(make_record(f"b{i}", variant="b", latency_ms=300.0 + i % 9, **tagged) for i in range(55)),
        *(failed_over(f"be{i}", variant="b", **tagged) for i in range(8)),
    ]
    write(*records)
    since = ("--since", "2000-01-01T00:00:00Z")

    doc = json.loads(ok(keel("experiment", "report", "ab-models", *since, "--format", "json")))
    assert doc["control"] == "a" and doc["variants"]["a"]["n"] == 62
    rate = doc["variants"]["b"]["error_rate"]
    assert rate["value"] == pytest.approx(8 / 63)
    assert rate["lower"] < rate["value"] < rate["upper"]
    tests = doc["comparisons"]["b"]
    assert 0 < tests["error_rate"]["p_value"] < 0.1
    assert tests["error_rate"]["chance_to_beat_control"] < 0.1  # b errs more: lower is better
    assert tests["latency_ms"]["difference"] == pytest.approx(-100.0, abs=2)
    assert tests["thumbs_down_rate"] is None  # nobody rated anything

    table = ok(keel("experiment", "report", "ab-models", *since))
    assert "a (control)" in table and "b vs a" in table and "too little data" in table


def test_size_matches_the_sizing_function() -> None:
    def size(*args: str) -> Result:
        return CliRunner().invoke(cli, ["experiment", "size", *args])  # needs no keel.yaml

    expected = sample_size(0.1, 0.02)
    text = ok(size("--baseline-rate", "0.1", "--mde", "0.02"))
    assert f"{expected:,} samples per variant" in text
    doc = json.loads(
        ok(size("--baseline-rate", "0.1", "--mde", "0.02", "--power", "0.9", "--format", "json"))
    )
    assert doc["per_variant"] == sample_size(0.1, 0.02, power=0.9) > expected
    bad = one_error_line(size("--baseline-rate", "0.1", "--mde", "0"))
    assert bad.startswith("keel: error: --mde:")
