"""Per-variant guard metrics of one experiment, read from the stored requests.

The gateway records each request's ``experiment`` and ``variant`` on its
``requests`` row; this module turns the rows of one analysis window into one
``VariantMetrics`` per variant, for ``decide`` and the CLI reports:

* ``n``: requests; ``errors``: rows with ``status = 'error'``;
* ``latencies_ms`` of every request, ``ttft_ms`` where one was measured;
* ``costs_usd`` (``cost_nano`` / 1e9) of requests whose price is known;
  an unknown price (NULL) counts in ``cost_unknown``, never as $0;
* ``guardrail_flags``: a guardrail decision of flag, block or redact;
* ``rated`` / ``thumbs_down``: requests with feedback, and those whose latest
  feedback scored under 0.5 (thumbs down is 0);
* ``judge_scores``: the online judge's score in [0, 1], read from the row's
  ``detail["judge"]`` — a number, or an object with a ``score`` — which the
  gateway writes for judged (sampled) requests and for shadow copies (the
  pairwise preference: 1 candidate better, 0.5 tie, 0 control better);
* ``units``: distinct tenants or end users seen (unit ``tenant`` / ``user``),
  so the sample-ratio check counts units, not requests.

Shadow rows (``shadow = true``) are the candidate's answers to mirrored
copies and belong to the candidate, whatever their variant column says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.experiments.decide import VariantMetrics
from keel.experiments.spec import Experiment
from keel.store.db import translate_errors
from keel.store.tables import feedback, requests

__all__ = ["FLAGGED", "THUMBS_DOWN_BELOW", "judge_score", "variant_metrics"]

NANO_PER_USD = 1_000_000_000
FLAGGED = ("flag", "block", "redact")
THUMBS_DOWN_BELOW = 0.5  # keel.store.feedback.USEFUL_SCORE: at or above it is useful


@dataclass(slots=True)
class _Tally:
    n: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    costs_usd: list[float] = field(default_factory=list)
    cost_unknown: int = 0
    guardrail_flags: int = 0
    judge_scores: list[float] = field(default_factory=list)
    units: set[str] = field(default_factory=set)
    latest_feedback: dict[str, tuple[int, float]] = field(default_factory=dict)

    def metrics(self, count_units: bool) -> VariantMetrics:
        scores = [score for _, score in self.latest_feedback.values()]
        return VariantMetrics(
            n=self.n,
            errors=self.errors,
            latencies_ms=tuple(self.latencies_ms),
            ttft_ms=tuple(self.ttft_ms),
            costs_usd=tuple(self.costs_usd),
            cost_unknown=self.cost_unknown,
            rated=len(scores),
            thumbs_down=sum(1 for s in scores if s < THUMBS_DOWN_BELOW),
            guardrail_flags=self.guardrail_flags,
            judge_scores=tuple(self.judge_scores),
            units=len(self.units) if count_units else None,
        )


def judge_score(value: Any) -> float | None:
    """The score in a row's ``detail["judge"]``: a number, or ``{"score": number}``."""
    if isinstance(value, Mapping):
        value = value.get("score")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    score = float(value)
    return score if 0.0 <= score <= 1.0 else None


def variant_metrics(
    engine: sa.Engine,
    experiment_name: str,
    since: datetime,
    *,
    spec: Experiment | None = None,
    until: datetime | None = None,
) -> dict[str, VariantMetrics]:
    """One ``VariantMetrics`` per variant for requests of the experiment from ``since``.

    With ``spec`` (else read from the store) every variant is present, with
    zero counts when it has no traffic, and rows naming an unknown variant
    are left out. ``until`` (exclusive) bounds the window for reports.
    """
    if spec is None:
        from keel.store.experiments import ExperimentStore

        spec = ExperimentStore(engine).get(experiment_name).spec
    candidate = spec.candidates[0].name if len(spec.candidates) == 1 else None
    tallies = {v.name: _Tally() for v in spec.variants}
    window = [requests.c.experiment == experiment_name, requests.c.started_at >= since]
    if until is not None:
        window.append(requests.c.started_at < until)
    rows_query = sa.select(
        requests.c.variant,
        requests.c.shadow,
        requests.c.status,
        requests.c.latency_ms,
        requests.c.ttft_ms,
        requests.c.cost_nano,
        requests.c.guardrail,
        requests.c.detail["judge"].label("judge"),
        requests.c.tenant,
        requests.c.end_user,
    ).where(*window)
    feedback_query = (
        sa.select(
            requests.c.variant,
            requests.c.shadow,
            feedback.c.request_id,
            feedback.c.id,
            feedback.c.score,
        )
        .join_from(feedback, requests, feedback.c.request_id == requests.c.request_id)
        .where(*window)
    )

    def owner(variant: str | None, shadow: bool) -> _Tally | None:
        # A shadow copy is the candidate answering; the variant column may say either.
        name = candidate if shadow and candidate is not None else variant
        return tallies.get(name) if name is not None else None

    with (
        translate_errors(engine, "reading experiment metrics"),
        engine.connect() as conn,
    ):
        for row in conn.execute(rows_query):
            tally = owner(row.variant, row.shadow)
            if tally is None:
                continue
            _count(tally, row, spec.unit)
        for note in conn.execute(feedback_query):
            tally = owner(note.variant, note.shadow)
            if tally is None:
                continue
            seen = tally.latest_feedback.get(note.request_id)
            if seen is None or note.id > seen[0]:  # the latest word on a request counts
                tally.latest_feedback[note.request_id] = (note.id, float(note.score))
    count_units = spec.unit != "request"
    return {name: tally.metrics(count_units) for name, tally in tallies.items()}


def _count(tally: _Tally, row: Any, unit: str) -> None:
    tally.n += 1
    if row.status == "error":
        tally.errors += 1
    else:
        # Timings of completed requests only: a timed-out error's long wait is
        # the error-rate guard's business, not a latency sample.
        tally.latencies_ms.append(float(row.latency_ms))
        if row.ttft_ms is not None:
            tally.ttft_ms.append(float(row.ttft_ms))
    if row.cost_nano is None:
        tally.cost_unknown += 1
    else:
        tally.costs_usd.append(row.cost_nano / NANO_PER_USD)
    if row.guardrail in FLAGGED:
        tally.guardrail_flags += 1
    score = judge_score(row.judge)
    if score is not None:
        tally.judge_scores.append(score)
    if not row.shadow:  # units as assignment hashed them (keel.experiments.assign.unit_id)
        if unit == "tenant" and row.tenant is not None:
            tally.units.add(row.tenant)
        elif unit == "user" and row.end_user:
            tally.units.add(f"{row.tenant}/{row.end_user}")
