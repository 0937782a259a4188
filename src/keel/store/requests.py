"""The request store: compact request rows, daily spend rollups and feedback.

The telemetry writer hands it batches off the request path
(``write_batch``); the CLI, admin API and dashboard read traces, spend and
feedback through the other methods. Every method is synchronous and short,
and every read can be scoped to one tenant, which then never sees another's
rows. See docs/store.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.errors import InvalidRequest, NotFound
from keel.store import _bulk, rollups
from keel.store import feedback as fb
from keel.store._rows import encode_batch, usd
from keel.store.db import MAX_LIST, translate_errors
from keel.store.feedback import FeedbackRecord
from keel.store.rollups import MixRow, SpendRow, UsefulRow
from keel.store.tables import feedback, requests
from keel.telemetry.record import RequestRecord

# Each gc chunk is one IN (...) list of bound parameters: keep it well under
# SQLite's 32,766 and PostgreSQL's 65,535 parameter limits.
MAX_GC_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """Which stored requests ``list_requests`` returns; unset fields match everything."""

    tenant: str | None = None
    status: str | None = None  # "ok" | "error"
    alias: str | None = None  # as requested
    prompt_version: str | None = None
    since: datetime | None = None  # timezone-aware
    min_latency_ms: float | None = None
    errors_only: bool = False


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """One stored request: its columns, parsed ``detail``/``content`` and its feedback."""

    request_id: str
    trace_id: str
    span_id: str
    started_at: datetime
    tenant: str | None
    key_id: int | None
    end_user: str | None
    feature: str | None
    alias: str | None
    served_alias: str | None
    deployment: str | None
    provider_model: str | None
    operation: str
    stream: bool
    http_status: int
    status: str
    error_type: str | None
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    usage_estimated: bool
    cost_nano: int | None  # None: unknown price
    latency_ms: float
    ttft_ms: float | None
    attempt_count: int
    prompt_name: str | None
    prompt_version: str | None
    prompt_hash: str | None
    variant: str | None
    cache: str | None
    guardrail: str | None
    shadow: bool
    detail: dict[str, Any]  # attempts, stages, finish_reasons, metadata, parent_span_id...
    content: dict[str, Any] | None  # request_body, response_text; None unless captured
    experiment: str | None = None  # the experiment that assigned ``variant``
    feedback: tuple[FeedbackRecord, ...] = ()

    @property
    def cost_usd(self) -> float | None:
        return usd(self.cost_nano)

    def as_dict(self) -> dict[str, Any]:
        """The request as readers see it: cost in USD (None when unknown), not nano-USD."""
        data = asdict(self)
        del data["cost_nano"]
        data["cost_usd"] = self.cost_usd
        return data


def _aware(value: datetime, param: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidRequest(f"{param}: must be a timezone-aware datetime", param=param)
    return value


class RequestStore:
    """Requests, rollups and feedback on one engine (SQLite or PostgreSQL)."""

    def __init__(
        self, engine: sa.Engine, *, clock: Clock = utcnow, pack_batches: bool = True
    ) -> None:
        self._engine = engine
        self._clock = clock
        # One statement per SQLite batch (see keel.store._bulk): worth its extra
        # SQLite work only where the writer shares the GIL with an event loop.
        self._pack_batches = pack_batches

    # --- write path (the telemetry writer thread) ----------------------------------

    def write_batch(self, records: Sequence[RequestRecord], keep: Sequence[bool]) -> None:
        """Store the kept records and count every record in the rollups, in one transaction.

        A request id already stored is skipped rather than failing the batch
        (a client may reuse its own ``x-request-id``); its rollup still counts.
        """
        if len(records) != len(keep):
            raise ValueError(f"{len(records)} records but {len(keep)} keep flags")
        if not records:
            return
        bulk = _bulk.writer(self._engine.dialect)
        # Encoded before taking a connection: the transaction runs the two statements
        # (on SQLite after one orjson call that packs the rows).
        rows, increments = encode_batch(records, keep, bulk.stamp)
        with translate_errors(self._engine, "writing requests"), self._engine.begin() as conn:
            bulk.write(conn, rows, increments, pack=self._pack_batches)

    # --- traces --------------------------------------------------------------------

    def get(self, request_id: str, *, tenant: str | None) -> StoredRequest | None:
        """The stored request, or None if absent (or, with ``tenant``, another tenant's)."""
        query = sa.select(requests).where(requests.c.request_id == request_id)
        if tenant is not None:
            query = query.where(requests.c.tenant == tenant)
        with translate_errors(self._engine, "reading a request"), self._engine.connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
            if row is None:
                return None
            notes = fb.for_requests(conn, [request_id]).get(request_id, [])
        return StoredRequest(**row, feedback=tuple(notes))

    def list_requests(self, filters: TraceFilter, *, limit: int = 50) -> list[StoredRequest]:
        """Stored requests matching ``filters``, newest first, at most ``limit`` (≤ 1000)."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidRequest(f"limit: must be from 1 to {MAX_LIST}", param="limit")
        query = sa.select(requests)
        if filters.tenant is not None:
            query = query.where(requests.c.tenant == filters.tenant)
        if filters.status is not None:
            query = query.where(requests.c.status == filters.status)
        if filters.errors_only:
            query = query.where(requests.c.status == "error")
        if filters.alias is not None:
            query = query.where(requests.c.alias == filters.alias)
        if filters.prompt_version is not None:
            query = query.where(requests.c.prompt_version == filters.prompt_version)
        if filters.since is not None:
            query = query.where(requests.c.started_at >= _aware(filters.since, "since"))
        if filters.min_latency_ms is not None:
            query = query.where(requests.c.latency_ms >= filters.min_latency_ms)
        # (tenant, started_at) or (started_at) serve this order; request_id breaks ties.
        query = query.order_by(requests.c.started_at.desc(), requests.c.request_id.desc())
        with translate_errors(self._engine, "listing requests"), self._engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
            notes = fb.for_requests(conn, [row["request_id"] for row in rows])
        return [
            StoredRequest(**row, feedback=tuple(notes.get(row["request_id"], ()))) for row in rows
        ]

    # --- feedback ------------------------------------------------------------------

    def add_feedback(
        self,
        request_id: str,
        *,
        tenant: str | None,
        score: float,
        comment: str | None,
        tags: list[str],
    ) -> FeedbackRecord:
        """Record feedback on a stored request of ``tenant`` (any tenant when None).

        Raises ``NotFound`` alike for a missing request and another tenant's,
        so a caller cannot probe which request ids exist.
        """
        tag_list = fb.validate(score, comment, tags)
        owner_query = sa.select(requests.c.tenant).where(requests.c.request_id == request_id)
        if tenant is not None:
            owner_query = owner_query.where(requests.c.tenant == tenant)
        now = self._clock()
        with translate_errors(self._engine, "adding feedback"), self._engine.begin() as conn:
            owner = conn.execute(owner_query).one_or_none()
            if owner is None:
                raise NotFound(f"no request {request_id[:128]!r}", param="request_id")
            values = {
                "request_id": request_id,
                "tenant": owner.tenant,  # the request's own tenant, whoever asked
                "score": float(score),
                "comment": comment,
                "tags": tag_list,
                "created_at": now,
            }
            new_id = conn.execute(
                sa.insert(feedback).values(values).returning(feedback.c.id)
            ).scalar_one()
        return fb.record({"id": new_id, **values})

    # --- spend ---------------------------------------------------------------------

    def spend(
        self,
        by: Sequence[str],
        *,
        since: date,
        until: date | None = None,
        tenant: str | None = None,
    ) -> list[SpendRow]:
        """Rollups from ``since`` to ``until`` (UTC days, both included) grouped by ``by``.

        Dimensions: tenant, user, feature, alias, provider_model,
        prompt_version, variant, day. Exact whatever trace sampling kept.
        """
        with translate_errors(self._engine, "reading spend"), self._engine.connect() as conn:
            return rollups.spend(conn, by, since=since, until=until, tenant=tenant)

    def useful_outputs(
        self, by: Sequence[str], *, since: date, tenant: str | None = None
    ) -> list[UsefulRow]:
        """Cost per positively rated request, grouped by prompt_version and/or alias."""
        with translate_errors(self._engine, "reading spend"), self._engine.connect() as conn:
            return rollups.useful_outputs(conn, by, since=since, tenant=tenant)

    def recent_mix(self, since: datetime, *, tenant: str | None = None) -> list[MixRow]:
        """Requests and cost per provider model since ``since``, for cost projection."""
        with translate_errors(self._engine, "reading spend"), self._engine.connect() as conn:
            return rollups.recent_mix(conn, since, tenant=tenant)

    # --- retention -----------------------------------------------------------------

    def gc(self, older_than: datetime, *, batch: int = 5000) -> int:
        """Delete requests started before ``older_than`` and their feedback; return the count.

        Works in chunks of ``batch`` primary keys, each its own short
        transaction, so it never holds a long lock or runs into a statement
        timeout however much has piled up. Rollups are kept.
        """
        cutoff = _aware(older_than, "older_than")
        if not 1 <= batch <= MAX_GC_BATCH:
            raise InvalidRequest(f"batch: must be from 1 to {MAX_GC_BATCH}", param="batch")
        chunk = (
            sa.select(requests.c.request_id)
            .where(requests.c.started_at < cutoff)
            .order_by(requests.c.started_at)
            .limit(batch)
        )
        deleted = 0
        while True:
            with (
                translate_errors(self._engine, "deleting old requests"),
                self._engine.begin() as conn,
            ):
                ids = list(conn.execute(chunk).scalars())
                if ids:
                    conn.execute(sa.delete(feedback).where(feedback.c.request_id.in_(ids)))
                    result = conn.execute(sa.delete(requests).where(requests.c.request_id.in_(ids)))
                    deleted += result.rowcount
            if len(ids) < batch:
                return deleted
