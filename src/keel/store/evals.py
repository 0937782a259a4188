"""Eval runs: what an eval suite concluded about a prompt version (or a model alias).

The evals runner writes one row per run with :func:`record_eval_run`; the
prompt registry reads them, since a run that passed its gate is what
qualifies a prompt version for promotion (``keel.store.prompts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.errors import InvalidRequest
from keel.store.db import capped, translate_errors
from keel.store.tables import ID_LEN, NAME_LEN, PROMPT_NAME_LEN, SHORT_LEN, eval_runs


@dataclass(frozen=True, slots=True)
class EvalRun:
    """One stored eval run. ``prompt_hash`` is the content hash it scored, when known."""

    id: int
    suite: str
    prompt_name: str | None
    prompt_version: str | None
    prompt_hash: str | None
    dataset_hash: str
    passed: bool
    summary: Mapping[str, Any]
    cost_usd: float | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the CLI and the admin API."""
        return {
            "id": self.id,
            "suite": self.suite,
            "prompt_name": self.prompt_name,
            "prompt_version": self.prompt_version,
            "prompt_hash": self.prompt_hash,
            "dataset_hash": self.dataset_hash,
            "passed": self.passed,
            "summary": dict(self.summary),
            "cost_usd": self.cost_usd,
            "created_at": self.created_at.isoformat(),
        }


def _text(value: str | None, field: str, width: int, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if value is None or not value.strip() or len(value) > width:
        raise InvalidRequest(f"{field}: expected 1 to {width} characters", param=field)


def record_eval_run(
    engine: sa.Engine,
    *,
    suite: str,
    prompt_name: str | None,
    prompt_version: str | None,
    dataset_hash: str,
    passed: bool,
    summary: Mapping[str, Any] | None = None,
    cost_usd: float | None = None,
    prompt_hash: str | None = None,
    clock: Clock = utcnow,
) -> EvalRun:
    """Store one eval run and return it with its id.

    ``prompt_name`` and ``prompt_version`` go together (both None for a run
    whose target was a model alias). ``passed`` is the gate's verdict.
    """
    _text(suite, "suite", NAME_LEN)
    _text(dataset_hash, "dataset_hash", ID_LEN)
    _text(prompt_name, "prompt_name", PROMPT_NAME_LEN, required=False)
    _text(prompt_version, "prompt_version", SHORT_LEN, required=False)
    _text(prompt_hash, "prompt_hash", ID_LEN, required=False)
    if (prompt_name is None) != (prompt_version is None):
        raise InvalidRequest(
            "prompt_version: give both prompt_name and prompt_version, or neither",
            param="prompt_version",
        )
    run = EvalRun(
        id=0,
        suite=suite,
        prompt_name=prompt_name,
        prompt_version=prompt_version,
        prompt_hash=prompt_hash,
        dataset_hash=dataset_hash,
        passed=bool(passed),
        summary=dict(summary or {}),
        cost_usd=cost_usd,
        created_at=clock(),
    )
    values = {f.name: getattr(run, f.name) for f in fields(run) if f.name != "id"}
    with translate_errors(engine, "recording an eval run"), engine.begin() as conn:
        run_id = conn.execute(
            sa.insert(eval_runs).values(**values).returning(eval_runs.c.id)
        ).scalar_one()
    return replace(run, id=run_id)


class EvalRunStore:
    """Reads eval runs back."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def get(self, run_id: int) -> EvalRun | None:
        query = sa.select(eval_runs).where(eval_runs.c.id == run_id)
        with translate_errors(self._engine, "reading an eval run"), self._engine.connect() as c:
            row = c.execute(query).mappings().one_or_none()
        return None if row is None else EvalRun(**row)

    def list(
        self,
        *,
        suite: str | None = None,
        prompt_name: str | None = None,
        prompt_version: str | None = None,
        passed: bool | None = None,
        limit: int = 100,
    ) -> list[EvalRun]:
        """Newest first, at most ``limit`` (1 to 1000), filtered by any of the arguments."""
        query = sa.select(eval_runs).order_by(eval_runs.c.id.desc())
        if suite is not None:
            query = query.where(eval_runs.c.suite == suite)
        if prompt_name is not None:
            query = query.where(eval_runs.c.prompt_name == prompt_name)
        if prompt_version is not None:
            query = query.where(eval_runs.c.prompt_version == prompt_version)
        if passed is not None:
            query = query.where(eval_runs.c.passed == passed)
        query = query.limit(capped(limit))
        with translate_errors(self._engine, "reading eval runs"), self._engine.connect() as c:
            return [EvalRun(**row) for row in c.execute(query).mappings()]
