"""``keel eval run|runs|calibrate`` and ``keel dataset add-from-trace``, end to end in-process."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import Invoke, make_record
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.store import RequestStore

PROMPT = {
    "name": "classify",
    "version": "1.0.0",
    "model": "fast",
    "messages": [
        {"role": "system", "content": "Classify the support ticket as billing, account or other."},
        {"role": "user", "content": "Ticket: {{ text }}"},
    ],
    "variables": {"text": {"type": "string"}},
}
# v2 looks better (it explains the labels) but puts them in the user message,
# where the simulator's scripts see "password" in every ticket: "other" tickets regress.
V2_USER = "Labels: billing, account (password, login), other.\nTicket: {{ text }}"
SIM = {
    "kind": "simulator",
    "seed": 1,
    "answers": [
        {"pattern": "(?i)refund", "answer": "billing"},
        {"pattern": "(?i)password", "answer": "account"},
    ],
    "default_answer": "other",
}


def ticket(i: int) -> dict[str, Any]:
    kind = ("billing", "account", "other")[i % 3]
    text = {
        "billing": f"Please refund order {i}",
        "account": f"I forgot my password ({i})",
        "other": f"Where is your office? ({i})",
    }[kind]
    return {"id": f"t{i:03d}", "variables": {"text": text}, "expected": kind, "tags": [kind]}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = {
        "database_url": f"sqlite:///{tmp_path / 'keel.db'}",
        "providers": {"sim": SIM},
        "models": [{"alias": "fast", "deployments": [{"provider": "sim", "model": "m"}]}],
        "prices": {"sim/m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "telemetry": {"log": {"destination": "off"}},
    }
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config))
    for version, user in (("1.0.0", None), ("1.1.0", V2_USER)):
        folder = tmp_path / f"prompts-{version}"
        folder.mkdir()
        prompt = {**PROMPT, "version": version}
        if user is not None:
            prompt["messages"] = [PROMPT["messages"][0], {"role": "user", "content": user}]
        (folder / "classify.yaml").write_text(yaml.safe_dump(prompt, sort_keys=False))
    rows = [json.dumps(ticket(i)) for i in range(150)]
    (tmp_path / "tickets.jsonl").write_text("\n".join(rows) + "\n")
    suite = {
        "name": "tickets",
        "dataset": "tickets.jsonl",
        "target": {"prompt": "classify@1.0.0"},
        "scorers": [{"type": "exact"}],
        "gate": {"floors": {"exact": 0.9}},
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    return tmp_path


def keel(project: Path, *args: str) -> Result:
    runner = CliRunner(env={"COLUMNS": "200"})
    return runner.invoke(cli, [*args, "-c", str(project / "keel.yaml")])


def test_promote_after_a_passing_run_and_not_after_a_failing_one(project: Path) -> None:
    assert keel(project, "prompts", "push", str(project / "prompts-1.0.0")).exit_code == 0
    refused = keel(project, "prompts", "promote", "classify", "1.0.0")
    assert refused.exit_code == 2

    passed = keel(project, "eval", "run", str(project / "suite.yaml"))
    assert passed.exit_code == 0, (passed.stdout, passed.stderr)
    assert passed.stdout.startswith("tickets: PASSED — classify@1.0.0 vs none, 150 examples")
    assert "stored as eval run #1" in passed.stdout

    promoted = keel(project, "prompts", "promote", "classify", "1.0.0")
    assert promoted.exit_code == 0, promoted.stderr
    assert "qualified by eval run #1" in promoted.stdout

    # v1.1.0 regresses on the account slice; the production label's v1.0.0 is the baseline.
    assert keel(project, "prompts", "push", str(project / "prompts-1.1.0")).exit_code == 0
    junit, markdown = project / "junit.xml", project / "report.md"
    failed = keel(
        project,
        "eval",
        "run",
        str(project / "suite.yaml"),
        "--prompt-version",
        "1.1.0",
        "--format",
        "json",
        "--junit",
        str(junit),
        "--markdown",
        str(markdown),
    )
    assert failed.exit_code == 1, (failed.stdout, failed.stderr)
    report = json.loads(failed.stdout)
    assert report["run_id"] == 2 and report["passed"] is False
    assert report["baseline_source"] == "label:production → 1.0.0"
    assert report["scorers"]["exact"]["baseline_pass_rate"] == 1.0
    assert report["scorers"]["exact"]["delta_points"] == pytest.approx(-100 / 3)
    slices = {s["tag"]: s for s in report["slices"]}
    assert slices["other"]["pass_rate"] == 0.0 and slices["billing"]["pass_rate"] == 1.0
    assert slices["account"]["pass_rate"] == 1.0
    assert any("slice 'other'" in w for w in report["verdict"]["warnings"])
    assert ET.parse(junit).getroot().get("failures") == "52"  # 50 examples + 2 gate checks
    assert markdown.read_text().startswith("### ❌ keel eval `tickets` failed")

    not_qualified = keel(project, "prompts", "promote", "classify", "1.1.0")
    assert not_qualified.exit_code == 2
    assert "eval run" in not_qualified.stderr

    runs = keel(project, "eval", "runs", "--suite", "tickets", "--format", "json")
    listed = json.loads(runs.stdout)
    assert [(r["id"], r["passed"], r["prompt_version"]) for r in listed] == [
        (2, False, "1.1.0"),
        (1, True, "1.0.0"),
    ]
    assert "examples" not in listed[0]["summary"]
    table = keel(project, "eval", "runs")
    assert "FAILED" in table.stdout and "classify@1.1.0" in table.stdout


def test_a_stored_run_as_baseline(project: Path) -> None:
    keel(project, "prompts", "push", str(project / "prompts-1.0.0"))
    keel(project, "prompts", "push", str(project / "prompts-1.1.0"))
    assert keel(project, "eval", "run", str(project / "suite.yaml")).exit_code == 0
    against = keel(
        project,
        "eval",
        "run",
        str(project / "suite.yaml"),
        "--prompt-version",
        "1.1.0",
        "--baseline",
        "run:1",
        "--format",
        "markdown",
    )
    assert against.exit_code == 1
    assert "**baseline** run #1 (classify@1.0.0)" in against.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt-version", "9.9.9"], "prompt classify has no version 9.9.9"),
        (["--baseline", "yesterday"], "--baseline: 'yesterday' is not a baseline"),
        (["--gateway", "http://127.0.0.1:9", "--key", "k"], "cannot reach the gateway"),
        (["--key", "k"], "--key goes with --gateway URL"),
    ],
)
def test_errors_exit_2(project: Path, args: list[str], message: str) -> None:
    keel(project, "prompts", "push", str(project / "prompts-1.0.0"))
    result = keel(project, "eval", "run", str(project / "suite.yaml"), *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr


def test_a_bad_suite_exits_2_naming_the_field(project: Path) -> None:
    bad = project / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "dataset": "tickets.jsonl",
                "target": {"alias": "fast"},
                "scorers": [{"type": "exakt"}],
            }
        )
    )
    result = keel(project, "eval", "run", str(bad))
    assert result.exit_code == 2
    assert "scorers[0].type: unknown scorer 'exakt'" in result.stderr
    bad.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "dataset": "tickets.jsonl",
                "target": {"alias": "fast"},
                "scorers": [{"type": "exact"}],
                "repeat": 3,
            }
        )
    )
    result = keel(project, "eval", "run", str(bad))
    assert result.exit_code == 2 and "repeat: unknown key" in result.stderr


def test_calibrate_calls_the_judge_calibration(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.evals import calibrate as module
    from keel.evals.calibrate import Calibration, Confusion

    seen: dict[str, Any] = {}

    async def fake(labels: Path, gateway: Any, spec: Any, **kwargs: Any) -> Calibration:
        seen.update(labels=labels, spec=spec, cache=kwargs.get("cache"))
        await gateway.check()
        return Calibration(
            n=10,
            accuracy=0.7,
            kappa=0.4,
            spearman=0.5,
            scored=10,
            confusion=Confusion(4, 2, 1, 3),
            errors=0,
            disagreements=("a", "b", "c"),
            warning="kappa 0.40 is below 0.6: a judge that disagrees with humans is noise",
        )

    monkeypatch.setattr(module, "run_calibration", fake)
    labels = project / "human.jsonl"
    labels.write_text('{"id": "a", "output": "x", "pass": true}\n')
    result = keel(project, "eval", "calibrate", "--labels", str(labels), "--judge", "fast")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Cohen's kappa (pass/fail): 0.400" in result.stdout
    assert "warning: kappa 0.40 is below 0.6" in result.stdout
    assert seen["spec"]["alias"] == "fast" and seen["spec"]["type"] == "judge"
    assert seen["cache"] is not None
    missing = keel(project, "eval", "calibrate", "--labels", str(labels))
    assert missing.exit_code == 2 and "--judge ALIAS is required" in missing.stderr


def test_add_from_trace(keel_yaml: str, store: RequestStore, tmp_path: Path) -> None:
    store.write_batch([make_record("req-42")], [True])
    runner = CliRunner()
    dataset = tmp_path / "golden.jsonl"
    args = [
        "dataset",
        "add-from-trace",
        "req-42",
        "--dataset",
        str(dataset),
        "--expected",
        "Keel is a control plane",
        "--tag",
        "incident",
        "-c",
        keel_yaml,
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"added example req-42 to {dataset} (1 examples, sha256:")
    row = json.loads(dataset.read_text())
    assert row["id"] == "req-42" and row["expected"] == "Keel is a control plane"
    assert row["messages"] == [{"role": "user", "content": "What is Keel?"}]
    assert row["tags"] == ["incident"]
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "already in the dataset" in again.stderr
    missing = runner.invoke(
        cli, ["dataset", "add-from-trace", "nope", "--dataset", str(dataset), "-c", keel_yaml]
    )
    assert missing.exit_code == 2 and "no stored request 'nope'" in missing.stderr


def test_add_from_trace_with_json_expected(
    keel: Invoke, store: RequestStore, tmp_path: Path
) -> None:
    store.write_batch([make_record("req-7")], [True])
    dataset = tmp_path / "golden.jsonl"
    result = keel(
        "dataset",
        "add-from-trace",
        "req-7",
        "--dataset",
        str(dataset),
        "--expected-json",
        '{"label": "billing"}',
        "--id",
        "case-7",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(dataset.read_text())["expected"] == {"label": "billing"}
