"""Reports: the JSON and JUnit parse, the Markdown renders its key lines, the table prints."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import pytest
from rich.console import Console
from runner_support import Exact, FakeGateway, Length, examples, suite, variables_text

from keel.evals.client import CallError
from keel.evals.report import render_table, summary, to_json, to_junit, to_markdown
from keel.evals.runner import Evaluation, RunResult, evaluate


def v2(body: Mapping[str, Any]) -> str:
    text = variables_text(body)
    number = int(text.split()[-1])
    if number == 3:
        raise CallError("503 upstream down (after 3 attempts)", status=503)
    return "wrong <&> answer" if number % 5 == 0 else text


@pytest.fixture
async def evaluation() -> Evaluation:
    gateway = FakeGateway(
        versions={"1.0.0": variables_text, "2.0.0": v2}, labels={"production": "1.0.0"}
    )
    tagged = examples(40, tags=lambda i: ["math"] if i % 5 == 0 else ["chat"])
    return await evaluate(
        suite(scorers=[{"type": "exact"}, {"type": "short"}], gate={"floors": {"exact": 0.9}}),
        tagged,
        "sha256:data",
        gateway,
        [Exact(), Length(limit=20)],
        progress=False,
    )


def test_json_report(evaluation: Evaluation) -> None:
    data = json.loads(json.dumps(to_json(evaluation)))
    assert data["passed"] is False and data["verdict"]["passed"] is False
    assert data["prompt"] == {
        "name": "classify",
        "version": "2.0.0",
        "hash": "sha256:classify-2.0.0",
    }
    assert data["n"] == 40 and data["errors"] == 1
    exact = data["scorers"]["exact"]
    assert exact["pass_rate"] == pytest.approx(31 / 40)
    assert exact["baseline_pass_rate"] == 1.0
    assert exact["regressions"] == 9 and exact["improvements"] == 0
    assert len(exact["mean_ci"]) == 2
    assert {s["tag"] for s in data["slices"]} == {"chat", "math"}
    assert len(data["tail"]) == 4
    assert data["usage"]["total_tokens"]["change"] == pytest.approx(0.0)
    assert data["baseline"]["source"] == "label:production → 1.0.0"
    assert [e["id"] for e in data["examples"]][:2] == ["ex0000", "ex0001"]
    errored = next(e for e in data["examples"] if e["id"] == "ex0003")
    assert errored["e"] == "503 upstream down (after 3 attempts)"


def test_a_stored_summary_reads_back_as_a_run(evaluation: Evaluation) -> None:
    back = RunResult.from_summary(json.loads(json.dumps(summary(evaluation))), run_id=9)
    assert back.n == 40 and back.scorers == ("exact", "short")
    assert back.pass_rate == evaluation.candidate.pass_rate
    assert back.examples[3].error == "503 upstream down (after 3 attempts)"
    assert back.examples[0].tags == ("math",)


def test_junit_report(evaluation: Evaluation) -> None:
    root = ET.fromstring(to_junit(evaluation))
    cases, gate = root.findall("testsuite")
    assert cases.get("name") == "demo"
    testcases = cases.findall("testcase")
    assert len(testcases) == 80  # 40 examples x 2 scorers
    assert cases.get("tests") == "80"
    errors = [c for c in testcases if c.find("error") is not None]
    failures = [c for c in testcases if c.find("failure") is not None]
    assert {(c.get("classname"), c.get("name")) for c in errors} == {
        ("demo.exact", "ex0003"),
        ("demo.short", "ex0003"),
    }
    assert cases.get("errors") == "2" and cases.get("failures") == str(len(failures))
    failed = next(c for c in failures if c.get("name") == "ex0005")
    assert "got 'wrong <&> answer'" in (failed.find("failure").text or "")  # type: ignore[union-attr]
    gate_cases = {c.get("name"): c for c in gate.findall("testcase")}
    assert gate_cases["floor exact"].find("failure") is not None
    assert gate_cases["regression exact"].find("failure") is not None
    assert gate_cases["regression short"].find("failure") is None
    properties = {p.get("name"): p.get("value") for p in cases.iter("property")}
    assert properties["passed"] == "false" and properties["target"] == "classify@2.0.0"


def test_markdown_report(evaluation: Evaluation) -> None:
    text = to_markdown(evaluation)
    lines = text.splitlines()
    assert lines[0] == "### ❌ keel eval `demo` failed"
    assert "**Candidate** `classify@2.0.0` · **baseline** label:production → 1.0.0" in lines[2]
    assert "| scorer | mean [95% CI] | pass | baseline | Δ points | p | errors |" in lines
    assert any(
        line.startswith("| exact | 0.775 [") and "| 100.0% | -22.5 |" in line for line in lines
    )
    assert "**Gate failures**" in lines
    assert "- exact: mean 0.775 is below the floor 0.900" in lines
    assert "<details><summary>Slices by tag</summary>" in lines
    assert any(line.startswith("| math | 8 | 0.0% | 100.0% | -100.0 |") for line in lines)
    assert any("slice 'math' (8 examples) regressed" in line for line in lines)


def test_terminal_table(evaluation: Evaluation) -> None:
    out = io.StringIO()
    render_table(evaluation, Console(file=out, width=200, highlight=False))
    text = out.getvalue()
    assert text.startswith("demo: FAILED — classify@2.0.0 vs label:production → 1.0.0, 40 examples")
    assert "gate failed: exact: mean 0.775 is below the floor 0.900" in text
    assert "slices by tag" in text and "worst 10% of examples" in text
