"""Reports of an evaluation: JSON (also what a run stores), Markdown, JUnit XML, a terminal table.

The JSON is the stored summary too: it carries the per-scorer numbers and a
compact row per example, so a later run can compare against it
(``baseline: run:ID``). The Markdown fits a PR comment; the JUnit XML has
one testcase per example and scorer, plus one per gate check.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from keel.evals.compare import Interval, PairedTest, ScorerStats

if TYPE_CHECKING:
    from rich.console import Console

    from keel.evals.runner import Evaluation

__all__ = ["render_table", "summary", "to_json", "to_junit", "to_markdown"]

_TAIL_SHOWN = 20


def _ci(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [interval.low, interval.high]


def _test(test: PairedTest | None) -> dict[str, Any]:
    if test is None:
        return {"p_value": None, "regressions": None, "improvements": None}
    return {
        "p_value": test.p_value,
        "regressions": test.regressions,
        "improvements": test.improvements,
    }


def _scorer(stats: ScorerStats) -> dict[str, Any]:
    return {
        "n": stats.n,
        "mean": stats.mean,
        "mean_ci": _ci(stats.mean_ci),
        "pass_rate": stats.pass_rate,
        "errors": stats.errors,
        "flaky": stats.flaky,
        "baseline_mean": stats.baseline_mean,
        "baseline_pass_rate": stats.baseline_pass_rate,
        "delta_mean": stats.delta_mean,
        "delta_ci": _ci(stats.delta_ci),
        "delta_points": stats.delta_points,
        **_test(stats.test),
    }


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    candidate, comparison, verdict = evaluation.candidate, evaluation.comparison, evaluation.verdict
    baseline = evaluation.baseline
    data = candidate.compact()
    examples = data.pop("examples")
    prompt = None
    if candidate.prompt_name is not None:
        prompt = {
            "name": candidate.prompt_name,
            "version": candidate.prompt_version,
            "hash": candidate.prompt_hash,
        }
    data.update(
        {
            "run_id": evaluation.run_id,
            "passed": verdict.passed,
            "prompt": prompt,
            "cost_usd": candidate.cost_usd,
            "verdict": {
                "passed": verdict.passed,
                "failures": list(verdict.failures),
                "warnings": list(verdict.warnings),
                "checks": [
                    {"kind": c.kind, "scorer": c.scorer, "passed": c.passed, "detail": c.detail}
                    for c in verdict.checks
                ],
            },
            "baseline": None
            if baseline is None
            else {
                "source": evaluation.baseline_source,
                "target": baseline.target,
                "run_id": baseline.run_id,
                "n": baseline.n,
                "pass_rate": baseline.pass_rate,
                "cost_usd": baseline.cost_usd,
            },
            "baseline_source": evaluation.baseline_source,
            "paired": comparison.paired,
            "scorers": {s.name: _scorer(s) for s in comparison.scorers},
            "overall": _scorer(comparison.overall),
            "slices": [
                {
                    "tag": s.tag,
                    "n": s.n,
                    "pass_rate": s.pass_rate,
                    "mean": s.mean,
                    "baseline_pass_rate": s.baseline_pass_rate,
                    "delta_points": s.delta_points,
                    **_test(s.test),
                }
                for s in comparison.slices
            ],
            "tail": [
                {
                    "id": t.id,
                    "tags": list(t.tags),
                    "score": t.score,
                    "baseline_score": t.baseline_score,
                    "passed": t.passed,
                    "error": t.error,
                }
                for t in comparison.tail
            ],
            "usage": {
                u.metric: {"candidate": u.candidate, "baseline": u.baseline, "change": u.change}
                for u in comparison.usage
            },
            "judge": None if evaluation.judge is None else dict(evaluation.judge),
            "gateway_calls": evaluation.calls,
            "notes": list(evaluation.notes),
            "examples": examples,
        }
    )
    return data


def summary(evaluation: Evaluation) -> dict[str, Any]:
    """What a stored run keeps: the JSON report (its run id is the row's own)."""
    data = to_json(evaluation)
    data.pop("run_id", None)
    return data


# --- text helpers --------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _points(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}"


def _p(test: PairedTest | None) -> str:
    return "-" if test is None else f"{test.p_value:.3g}"


def _usd(x: float | None) -> str:
    if x is None:
        return "unknown"
    return f"${x:.6f}".rstrip("0").rstrip(".") if x else "$0"


def _change(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


_JUDGE_TYPES = ("judge", "groundedness")


def _judge_text(evaluation: Evaluation) -> str:
    """``judge 110 calls $0.0123``, when the suite has a judge scorer."""
    judge = evaluation.judge
    if judge is None or not any(s.get("type") in _JUDGE_TYPES for s in evaluation.suite.scorers):
        return ""
    cost = None if judge.get("unknown_cost_calls") else judge.get("cost_usd")
    return f", judge {judge.get('calls', 0)} calls {_usd(cost)}"


def _headline(evaluation: Evaluation) -> str:
    candidate = evaluation.candidate
    verdict = "PASSED" if evaluation.passed else "FAILED"
    return (
        f"{evaluation.suite.name}: {verdict} — {candidate.target} vs {evaluation.baseline_source},"
        f" {candidate.n} examples x {candidate.repeats}, cost {_usd(candidate.cost_usd)}"
        f"{_judge_text(evaluation)}, {candidate.duration_s:.1f}s"
    )


def _scorer_rows(evaluation: Evaluation) -> list[list[str]]:
    rows = []
    comparison = evaluation.comparison
    for s in (*comparison.scorers, comparison.overall):
        name = "all scorers" if s is comparison.overall else s.name
        rows.append(
            [
                name,
                f"{s.mean:.3f} [{s.mean_ci.low:.3f}, {s.mean_ci.high:.3f}]",
                _pct(s.pass_rate),
                _pct(s.baseline_pass_rate),
                _points(s.delta_points),
                _p(s.test),
                str(s.errors),
            ]
        )
    return rows


_SCORER_COLUMNS = ["scorer", "mean [95% CI]", "pass", "baseline", "Δ points", "p", "errors"]
_SLICE_COLUMNS = ["tag", "n", "pass", "baseline", "Δ points", "p"]
_TAIL_COLUMNS = ["example", "tags", "score", "baseline", "error"]
_USAGE_COLUMNS = ["per call", "candidate", "baseline", "change"]


def _slice_rows(evaluation: Evaluation) -> list[list[str]]:
    return [
        [
            s.tag,
            str(s.n),
            _pct(s.pass_rate),
            _pct(s.baseline_pass_rate),
            _points(s.delta_points),
            _p(s.test),
        ]
        for s in evaluation.comparison.slices
    ]


def _tail_rows(evaluation: Evaluation) -> list[list[str]]:
    """The worst 10%, less the examples that scored a perfect 1 (nothing to look at)."""
    return [
        [
            t.id,
            ", ".join(t.tags) or "-",
            f"{t.score:.3f}",
            _num(t.baseline_score),
            (t.error or "-")[:80],
        ]
        for t in evaluation.comparison.tail[:_TAIL_SHOWN]
        if t.score < 1 or t.error is not None or not t.passed
    ]


def _usage_rows(evaluation: Evaluation) -> list[list[str]]:
    rows = []
    for u in evaluation.comparison.usage:
        if u.metric == "cost_usd":
            cells = [_usd(u.candidate), _usd(u.baseline) if u.baseline is not None else "-"]
        else:
            digits = 1
            cells = [_num(u.candidate, digits), _num(u.baseline, digits)]
        rows.append([u.metric, *cells, _change(u.change)])
    return rows


# --- Markdown ------------------------------------------------------------------------------


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def to_markdown(evaluation: Evaluation) -> str:
    """A PR comment: verdict, per-scorer table, failures and warnings, details folded."""
    candidate = evaluation.candidate
    mark = "✅" if evaluation.passed else "❌"
    verdict = "passed" if evaluation.passed else "failed"
    lines = [
        f"### {mark} keel eval `{evaluation.suite.name}` {verdict}",
        "",
        f"**Candidate** `{candidate.target}` · **baseline** {evaluation.baseline_source} ·"
        f" {candidate.n} examples x {candidate.repeats} · cost {_usd(candidate.cost_usd)}"
        + _judge_text(evaluation).replace(", judge", " · judge")
        + (f" · run #{evaluation.run_id}" if evaluation.run_id is not None else ""),
        "",
        *_md_table(_SCORER_COLUMNS, _scorer_rows(evaluation)),
    ]
    if evaluation.verdict.failures:
        lines += ["", "**Gate failures**", ""]
        lines += [f"- {f}" for f in evaluation.verdict.failures]
    if evaluation.verdict.warnings or evaluation.notes:
        lines += ["", "**Warnings**", ""]
        lines += [f"- {w}" for w in (*evaluation.verdict.warnings, *evaluation.notes)]
    for title, columns, rows in (
        ("Slices by tag", _SLICE_COLUMNS, _slice_rows(evaluation)),
        ("Worst 10% of examples", _TAIL_COLUMNS, _tail_rows(evaluation)),
        ("Tokens, cost, latency", _USAGE_COLUMNS, _usage_rows(evaluation)),
    ):
        if rows:
            lines += ["", f"<details><summary>{title}</summary>", ""]
            lines += _md_table(columns, rows)
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


# --- JUnit ---------------------------------------------------------------------------------


def to_junit(evaluation: Evaluation) -> str:
    """JUnit XML: one testcase per example and scorer (failure or error), one per gate check."""
    candidate = evaluation.candidate
    name = evaluation.suite.name
    root = ET.Element("testsuites", name=f"keel eval {name}")
    cases = ET.SubElement(root, "testsuite", name=name)
    props = ET.SubElement(cases, "properties")
    for key, value in (
        ("target", candidate.target),
        ("baseline", evaluation.baseline_source),
        ("dataset_hash", candidate.dataset_hash),
        ("passed", str(evaluation.passed).lower()),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    failures = errors = tests = 0
    for example in candidate.examples:
        seconds = (example.latency_ms or 0.0) / 1000
        for scorer, outcome in example.scores.items():
            tests += 1
            case = ET.SubElement(
                cases,
                "testcase",
                classname=f"{name}.{scorer}",
                name=example.id,
                time=f"{seconds:.3f}",
            )
            if outcome.error is not None:
                errors += 1
                error = ET.SubElement(case, "error", message=outcome.error[:500], type="error")
                error.text = outcome.error
            elif not outcome.passed:
                failures += 1
                message = f"{scorer}: {outcome.value:.3f}"
                failure = ET.SubElement(case, "failure", message=message, type="failed")
                failure.text = outcome.detail or message
    cases.set("tests", str(tests))
    cases.set("failures", str(failures))
    cases.set("errors", str(errors))
    cases.set("time", f"{candidate.duration_s:.3f}")

    gate = ET.SubElement(root, "testsuite", name=f"{name}.gate")
    gate_failures = 0
    for check in evaluation.verdict.checks:
        case = ET.SubElement(
            gate, "testcase", classname=f"{name}.gate", name=f"{check.kind} {check.scorer}"
        )
        if not check.passed:
            gate_failures += 1
            ET.SubElement(
                case, "failure", message=check.detail, type=check.kind
            ).text = check.detail
    gate.set("tests", str(len(evaluation.verdict.checks)))
    gate.set("failures", str(gate_failures))
    gate.set("errors", "0")
    root.set("tests", str(tests + len(evaluation.verdict.checks)))
    root.set("failures", str(failures + gate_failures))
    root.set("errors", str(errors))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- terminal ------------------------------------------------------------------------------


def render_table(evaluation: Evaluation, console: Console) -> None:
    """The report as rich tables (model output printed as text, never as markup)."""
    from rich.table import Table
    from rich.text import Text

    style = "bold green" if evaluation.passed else "bold red"
    console.print(Text(_headline(evaluation), style=style))

    def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
        if not rows:
            return
        out = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for column in columns:
            out.add_column(column, overflow="fold")
        for row in rows:
            out.add_row(*(Text(cell) for cell in row))
        console.print(out)

    table("scorers", _SCORER_COLUMNS, _scorer_rows(evaluation))
    table("slices by tag", _SLICE_COLUMNS, _slice_rows(evaluation))
    table("worst 10% of examples", _TAIL_COLUMNS, _tail_rows(evaluation))
    table("tokens, cost, latency", _USAGE_COLUMNS, _usage_rows(evaluation))
    for failure in evaluation.verdict.failures:
        console.print(Text(f"gate failed: {failure}", style="red"))
    for warning in (*evaluation.verdict.warnings, *evaluation.notes):
        console.print(Text(f"warning: {warning}", style="yellow"))
    if evaluation.run_id is not None:
        console.print(Text(f"stored as eval run #{evaluation.run_id}"))
