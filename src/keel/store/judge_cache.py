"""The judge cache: an eval judge's verdicts, kept so an unchanged suite never asks twice.

A verdict is stored under a :class:`JudgeCacheKey`: the judge alias, the hash
of the judge's full rendered instructions (template, rubric, scale, request
parameters) and the hashes of what the judge was shown: the candidate output
and, when the prompt includes them, the reference and the context. Anything
that changes what the judge is asked changes the key; nothing else does.
(DeepEval's key omits the judge prompt, so editing a rubric served stale
verdicts; this key cannot.)

The methods block on the database; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.errors import InvalidRequest
from keel.store.db import translate_errors
from keel.store.tables import NAME_LEN, judge_cache


def sha256_hex(text: str) -> str:
    """The lower-case hex sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class JudgeCacheKey:
    """What one verdict depends on. ``None`` hashes: that part was not shown to the judge."""

    judge_alias: str
    judge_prompt_hash: str
    output_hash: str
    reference_hash: str | None = None
    context_hash: str | None = None

    @property
    def key(self) -> str:
        """sha256 over the parts, JSON-encoded so no two part lists share a key."""
        parts = [
            self.judge_alias,
            self.judge_prompt_hash,
            self.output_hash,
            self.reference_hash or "",
            self.context_hash or "",
        ]
        return hashlib.sha256(orjson.dumps(parts)).hexdigest()


@dataclass(frozen=True, slots=True)
class JudgeCacheStats:
    hits: int
    misses: int
    writes: int

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}


class JudgeCache:
    """Verdicts by key, with hit, miss and write counters for this instance.

    ``put`` keeps the first verdict stored under a key: two runs that judged
    the same thing at once both succeed, and later readers all see one answer.
    """

    def __init__(self, engine: sa.Engine, *, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()  # callers run get/put on worker threads
        self._hits = 0
        self._misses = 0
        self._writes = 0

    @property
    def stats(self) -> JudgeCacheStats:
        with self._lock:
            return JudgeCacheStats(self._hits, self._misses, self._writes)

    def get(self, key: JudgeCacheKey) -> dict[str, Any] | None:
        """The stored verdict, or None (counted as a miss)."""
        query = sa.select(judge_cache.c.verdict).where(judge_cache.c.key == key.key)
        with translate_errors(self._engine, "reading the judge cache"), self._engine.connect() as c:
            verdict = c.execute(query).scalar_one_or_none()
        with self._lock:
            if verdict is None:
                self._misses += 1
            else:
                self._hits += 1
        return None if verdict is None else dict(verdict)

    def put(self, key: JudgeCacheKey, verdict: Mapping[str, Any]) -> None:
        """Store ``verdict`` (JSON-ready) under ``key`` unless one is already there."""
        if not key.judge_alias or len(key.judge_alias) > NAME_LEN:
            raise InvalidRequest(
                f"judge_alias: expected 1 to {NAME_LEN} characters", param="judge_alias"
            )
        row = {
            "key": key.key,
            "judge_alias": key.judge_alias,
            "judge_prompt_hash": key.judge_prompt_hash,
            "output_hash": key.output_hash,
            "reference_hash": key.reference_hash,
            "context_hash": key.context_hash,
            "verdict": dict(verdict),
            "created_at": self._clock(),
        }
        with translate_errors(self._engine, "writing the judge cache"), self._engine.begin() as c:
            insert: Any
            if c.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            c.execute(insert(judge_cache).values(row).on_conflict_do_nothing())
        with self._lock:
            self._writes += 1

    def clear(self, *, judge_alias: str | None = None) -> int:
        """Delete every verdict (or only ``judge_alias``'s); returns how many.

        The key holds the alias, not the model behind it: after pointing an
        alias at another model, clear that alias (or judge with a new alias).
        """
        query = sa.delete(judge_cache)
        if judge_alias is not None:
            query = query.where(judge_cache.c.judge_alias == judge_alias)
        with translate_errors(self._engine, "clearing the judge cache"), self._engine.begin() as c:
            return c.execute(query).rowcount

    def count(self) -> int:
        """How many verdicts are stored (a method, not ``__len__``: an empty cache is truthy)."""
        query = sa.select(sa.func.count()).select_from(judge_cache)
        with (
            translate_errors(self._engine, "counting the judge cache"),
            self._engine.connect() as c,
        ):
            return int(c.execute(query).scalar_one())
