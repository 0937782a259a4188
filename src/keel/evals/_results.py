"""What a run produced: per-trial, per-example and per-run results, and their stored form.

A trial is one call of the target for one example (one repeat) and every
scorer's verdict on it. An example's result reduces its trials per scorer
(``mean``, ``pass@k`` or ``all-k``). A failed call or a scorer that raised
is a failed trial with value 0 and its error kept: errors are never dropped
from a mean.

The compact form (:meth:`RunResult.compact`) is what a stored run keeps in
its summary, so a later run can use it as its baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.evals.base import CallResult, Score

# Stored error messages are cut here: the summary stays compact.
_ERROR_CHARS = 300
COMPACT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Trial:
    """One repeat of one example: the call (None when it failed) and each scorer's score."""

    repeat: int
    output: CallResult | None
    scores: Mapping[str, Score]
    errors: Mapping[str, str] = field(default_factory=dict)  # "call" or a scorer name


@dataclass(frozen=True, slots=True)
class ScorerOutcome:
    """One scorer's reduced verdict on one example."""

    value: float
    passed: bool
    error: str | None = None  # the first error among the repeats
    flaky: bool = False  # repeats disagreed on pass/fail
    detail: str | None = None  # the first failing repeat's detail, for reports


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """One example's verdicts, usage (means per call, cost summed) and its trials."""

    id: str
    tags: tuple[str, ...]
    scores: Mapping[str, ScorerOutcome]
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    cost_usd: float | None = 0.0  # None: some call's price is unknown
    latency_ms: float | None = None  # mean over the calls that answered
    error: str | None = None  # the call's error, when a call failed
    trials: tuple[Trial, ...] = ()  # empty for a stored run read back

    @property
    def passed(self) -> bool:
        """Every scorer passed."""
        return all(outcome.passed for outcome in self.scores.values())

    @property
    def errored(self) -> bool:
        return self.error is not None or any(o.error for o in self.scores.values())

    @property
    def mean_score(self) -> float:
        values = [outcome.value for outcome in self.scores.values()]
        return sum(values) / len(values) if values else 0.0

    def compact(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.id,
            "s": {name: [round(o.value, 6), o.passed] for name, o in self.scores.items()},
            "it": round(self.input_tokens, 2),
            "ot": round(self.output_tokens, 2),
            "c": self.cost_usd,
            "l": None if self.latency_ms is None else round(self.latency_ms, 2),
        }
        if self.tags:
            row["t"] = list(self.tags)
        errors = {name: o.error[:_ERROR_CHARS] for name, o in self.scores.items() if o.error}
        if errors:
            row["se"] = errors
        if self.error is not None:
            row["e"] = self.error[:_ERROR_CHARS]
        return row

    @classmethod
    def from_compact(cls, row: Mapping[str, Any]) -> ExampleResult:
        score_errors = row.get("se") or {}
        scores = {
            str(name): ScorerOutcome(
                value=float(pair[0]), passed=bool(pair[1]), error=score_errors.get(name)
            )
            for name, pair in (row.get("s") or {}).items()
        }
        latency = row.get("l")
        cost = row.get("c")
        return cls(
            id=str(row["id"]),
            tags=tuple(str(t) for t in row.get("t") or ()),
            scores=scores,
            input_tokens=float(row.get("it") or 0),
            output_tokens=float(row.get("ot") or 0),
            cost_usd=None if cost is None else float(cost),
            latency_ms=None if latency is None else float(latency),
            error=row.get("e"),
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    """Every example's result for one target, in dataset order."""

    suite: str
    target: str  # how the target reads: "classify@2.0.0", "alias fast"
    prompt_name: str | None
    prompt_version: str | None
    prompt_hash: str | None
    dataset_hash: str
    scorers: tuple[str, ...]
    examples: tuple[ExampleResult, ...]
    repeats: int = 1
    reducer: str = "mean"
    duration_s: float = 0.0
    run_id: int | None = None  # the stored run this was read from, or stored as

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def pass_rate(self) -> float:
        return sum(e.passed for e in self.examples) / self.n if self.n else 0.0

    @property
    def errors(self) -> int:
        return sum(e.errored for e in self.examples)

    @property
    def cost_usd(self) -> float | None:
        """The run's total cost; None when any call's price was unknown."""
        costs = [e.cost_usd for e in self.examples]
        return None if any(c is None for c in costs) else math.fsum(c or 0.0 for c in costs)

    def mean(self, scorer: str) -> float:
        values = [e.scores[scorer].value for e in self.examples if scorer in e.scores]
        return sum(values) / len(values) if values else 0.0

    def pass_rate_of(self, scorer: str) -> float:
        passes = [e.scores[scorer].passed for e in self.examples if scorer in e.scores]
        return sum(passes) / len(passes) if passes else 0.0

    def compact(self) -> dict[str, Any]:
        """The per-run numbers and compact per-example rows a stored run keeps."""
        return {
            "format": COMPACT_FORMAT,
            "suite": self.suite,
            "target": self.target,
            "dataset_hash": self.dataset_hash,
            "repeats": self.repeats,
            "reducer": self.reducer,
            "n": self.n,
            "pass_rate": self.pass_rate,
            "errors": self.errors,
            "scorers": {
                name: {"mean": self.mean(name), "pass_rate": self.pass_rate_of(name)}
                for name in self.scorers
            },
            "duration_s": round(self.duration_s, 3),
            "examples": [e.compact() for e in self.examples],
        }

    @classmethod
    def from_summary(
        cls,
        summary: Mapping[str, Any],
        *,
        run_id: int | None = None,
        prompt_name: str | None = None,
        prompt_version: str | None = None,
        prompt_hash: str | None = None,
    ) -> RunResult:
        """A stored run's candidate, read back from its summary (see :meth:`compact`)."""
        rows: Sequence[Mapping[str, Any]] = summary.get("examples") or ()
        return cls(
            suite=str(summary.get("suite", "")),
            target=str(summary.get("target", "")),
            prompt_name=prompt_name,
            prompt_version=prompt_version,
            prompt_hash=prompt_hash,
            dataset_hash=str(summary.get("dataset_hash", "")),
            scorers=tuple(summary.get("scorers") or ()),
            examples=tuple(ExampleResult.from_compact(row) for row in rows),
            repeats=int(summary.get("repeats") or 1),
            reducer=str(summary.get("reducer") or "mean"),
            duration_s=float(summary.get("duration_s") or 0.0),
            run_id=run_id,
        )


def reduce_trials(
    example_id: str,
    tags: Sequence[str],
    scorers: Sequence[str],
    trials: Sequence[Trial],
    reducer: str,
) -> ExampleResult:
    """One example's result from its trials (in repeat order)."""
    scores: dict[str, ScorerOutcome] = {}
    for name in scorers:
        got = [t.scores[name] for t in trials]
        passes = [s.passed for s in got]
        values = [s.value for s in got]
        if reducer == "pass@k":
            value, passed = max(values), any(passes)
        elif reducer == "all-k":
            value, passed = min(values), all(passes)
        else:
            value, passed = sum(values) / len(values), sum(passes) * 2 >= len(passes)
        found = (t.errors.get(name) or t.errors.get("call") for t in trials)
        error = next((e for e in found if e), None)
        detail = next((s.detail for s in got if not s.passed and s.detail), None)
        scores[name] = ScorerOutcome(
            value=value,
            passed=passed,
            error=error,
            flaky=len(set(passes)) > 1,
            detail=detail,
        )
    answered = [t.output for t in trials if t.output is not None]
    calls = len(answered) or 1
    costs = [o.cost_usd for o in answered]
    latencies = [o.latency_ms for o in answered]
    return ExampleResult(
        id=example_id,
        tags=tuple(tags),
        scores=scores,
        input_tokens=sum(o.input_tokens for o in answered) / calls,
        output_tokens=sum(o.output_tokens for o in answered) / calls,
        cost_usd=None if any(c is None for c in costs) else math.fsum(c or 0.0 for c in costs),
        latency_ms=sum(latencies) / len(latencies) if latencies else None,
        error=next((t.errors["call"] for t in trials if "call" in t.errors), None),
        trials=tuple(trials),
    )
