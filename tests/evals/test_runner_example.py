"""examples/evals runs as docs/evals.md says: v1 passes and promotes, v2 of the classifier fails."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keel.cli.main import cli

EXAMPLE = Path(__file__).parents[2] / "examples" / "evals"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "evals"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".keel", "__pycache__"))
    return folder


def keel(project: Path, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, [*args, "-c", str(project / "keel.yaml")])


def test_the_datasets_are_what_the_script_writes(project: Path) -> None:
    before = {p.name: p.read_text() for p in (project / "datasets").glob("*.jsonl")}
    runpy.run_path(str(project / "make_datasets.py"), run_name="__main__")
    after = {p.name: p.read_text() for p in (project / "datasets").glob("*.jsonl")}
    assert before == after
    assert len(after["tickets.jsonl"].splitlines()) >= 100
    assert len(after["rag.jsonl"].splitlines()) >= 100


def test_the_worked_example(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)  # keel.yaml's database path is relative
    assert keel(project, "prompts", "push", "prompts").exit_code == 0
    for name in ("classify-ticket", "rag-answer"):
        run = keel(project, "eval", "run", f"suites/{name}.yaml")
        assert run.exit_code == 0, (run.stdout, run.stderr)
        assert keel(project, "prompts", "promote", name, "1.0.0").exit_code == 0
    assert keel(project, "prompts", "push", "prompts-v2").exit_code == 0

    failed = keel(
        project,
        "eval",
        "run",
        "suites/classify-ticket.yaml",
        "--prompt-version",
        "1.1.0",
        "--format",
        "json",
    )
    assert failed.exit_code == 1
    report = json.loads(failed.stdout)
    slices = {s["tag"]: s for s in report["slices"]}
    assert slices["other"]["delta_points"] == -100.0
    assert all(slices[t]["delta_points"] == 0.0 for t in ("billing", "technical", "account"))

    passed = keel(
        project,
        "eval",
        "run",
        "suites/rag-answer.yaml",
        "--prompt-version",
        "1.1.0",
        "--format",
        "json",
    )
    assert passed.exit_code == 0, passed.stdout
    report = json.loads(passed.stdout)
    assert report["judge"]["calls"] == 0  # every verdict from the judge cache
    assert keel(project, "prompts", "promote", "rag-answer", "1.1.0").exit_code == 0
    assert keel(project, "prompts", "promote", "classify-ticket", "1.1.0").exit_code == 2
