"""Stored requests (compact rows), daily spend rollups and feedback.

Revision ID: 0002_requests_rollups_feedback
Revises: 0001_tenants_and_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_requests_rollups_feedback"
down_revision = "0001_tenants_and_keys"
branch_labels = None
depends_on = None

_COUNTERS = (
    "requests",
    "errors",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_nano",
    "unknown_cost_requests",
)


def upgrade() -> None:
    # Written out rather than imported from keel.store.tables: a migration is a
    # snapshot and must not change when the current table definitions do.
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("key_id", sa.Integer, nullable=True),
        sa.Column("end_user", sa.String(128), nullable=True),
        sa.Column("feature", sa.String(128), nullable=True),
        sa.Column("alias", sa.String(200), nullable=True),
        sa.Column("served_alias", sa.String(200), nullable=True),
        sa.Column("deployment", sa.String(200), nullable=True),
        sa.Column("provider_model", sa.String(200), nullable=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("http_status", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("error_type", sa.String(128), nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("cached_input_tokens", sa.Integer, nullable=False),
        sa.Column("cache_write_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("usage_estimated", sa.Boolean, nullable=False),
        sa.Column("cost_nano", sa.BigInteger, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float, nullable=True),
        sa.Column("attempt_count", sa.SmallInteger, nullable=False),
        sa.Column("prompt_name", sa.String(200), nullable=True),
        sa.Column("prompt_version", sa.String(64), nullable=True),
        sa.Column("prompt_hash", sa.String(128), nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("cache", sa.String(16), nullable=True),
        sa.Column("guardrail", sa.String(16), nullable=True),
        sa.Column("shadow", sa.Boolean, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("content", sa.JSON, nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_requests"),
    )
    # (tenant, time) serves every tenant-scoped listing; (time) serves
    # unscoped listings and retention. Nothing looks rows up by trace id, and
    # each index costs every insert (a third of SQLite's write time here).
    op.create_index("ix_requests_tenant_started_at", "requests", ["tenant", "started_at"])
    op.create_index("ix_requests_started_at", "requests", ["started_at"])

    op.create_table(
        "spend_daily",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("end_user", sa.String(128), nullable=False),
        sa.Column("feature", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("provider_model", sa.String(200), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in _COUNTERS),
        sa.PrimaryKeyConstraint("id", name="pk_spend_daily"),
        sa.UniqueConstraint(
            "day",
            "tenant",
            "end_user",
            "feature",
            "alias",
            "provider_model",
            "prompt_version",
            "variant",
            name="uq_spend_daily_key",
        ),
    )

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("comment", sa.String(4000), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_feedback_request_id", table_name="feedback")
    op.drop_table("feedback")
    op.drop_table("spend_daily")
    op.drop_index("ix_requests_started_at", table_name="requests")
    op.drop_index("ix_requests_tenant_started_at", table_name="requests")
    op.drop_table("requests")
