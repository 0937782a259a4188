"""Feedback on a stored request: a score in [0, 1], an optional comment, tags.

A thumbs up is 1 and a thumbs down 0. The repository methods live on
``RequestStore`` (feedback is only ever given on a request it holds); this
module owns the record and its validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.errors import InvalidRequest
from keel.store.tables import feedback

MAX_COMMENT = 4000
MAX_TAGS = 20
MAX_TAG = 64
# At or above this a score counts as a useful output (thumbs up is 1).
USEFUL_SCORE = 0.5


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    id: int
    request_id: str
    tenant: str | None
    score: float
    comment: str | None
    tags: tuple[str, ...]
    created_at: datetime


def validate(score: float, comment: str | None, tags: Sequence[str]) -> list[str]:
    """Raise ``InvalidRequest`` naming the bad field; return the tags as a list."""
    # bool is an int; True as a score is almost certainly a caller mistake.
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise InvalidRequest("score: must be a number from 0 to 1", param="score")
    if not 0 <= score <= 1:
        raise InvalidRequest(
            f"score: {score} is out of range; expected 0 (bad) to 1 (good)", param="score"
        )
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise InvalidRequest(
            f"comment: must be text of at most {MAX_COMMENT} characters", param="comment"
        )
    if isinstance(tags, str) or len(tags) > MAX_TAGS:
        raise InvalidRequest(f"tags: must be a list of at most {MAX_TAGS} tags", param="tags")
    for tag in tags:
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG:
            raise InvalidRequest(
                f"tags: each tag must be text of 1 to {MAX_TAG} characters", param="tags"
            )
    return list(tags)


def record(row: Mapping[str, Any] | sa.RowMapping) -> FeedbackRecord:
    return FeedbackRecord(
        id=row["id"],
        request_id=row["request_id"],
        tenant=row["tenant"],
        score=row["score"],
        comment=row["comment"],
        tags=tuple(row["tags"]),
        created_at=row["created_at"],
    )


def for_requests(
    conn: sa.Connection, request_ids: Sequence[str]
) -> dict[str, list[FeedbackRecord]]:
    """Feedback of each of ``request_ids``, oldest first, in one query."""
    found: dict[str, list[FeedbackRecord]] = {}
    if not request_ids:
        return found
    query = (
        sa.select(feedback)
        .where(feedback.c.request_id.in_(request_ids))
        .order_by(feedback.c.request_id, feedback.c.id)
    )
    for row in conn.execute(query).mappings():
        found.setdefault(row["request_id"], []).append(record(row))
    return found


def latest_useful() -> sa.Select[tuple[str]]:
    """Request ids whose latest feedback (highest id) is positive: one per request."""
    latest = sa.select(sa.func.max(feedback.c.id)).group_by(feedback.c.request_id)
    return sa.select(feedback.c.request_id).where(
        feedback.c.id.in_(latest), feedback.c.score >= USEFUL_SCORE
    )
