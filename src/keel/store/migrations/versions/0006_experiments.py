"""Experiments and rollouts: their state, their decisions, and the experiment of each request.

Revision ID: 0006_experiments
Revises: 0005_judge_cache
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_experiments"
down_revision = "0005_judge_cache"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written out rather than imported from keel.store.tables: a migration is a
    # snapshot and must not change when the current table definitions do.
    #
    # A nullable column is added in place on both databases (no table rebuild,
    # no rewrite of existing rows on PostgreSQL).
    op.add_column("requests", sa.Column("experiment", sa.String(128), nullable=True))
    op.create_index("ix_requests_experiment_started_at", "requests", ["experiment", "started_at"])

    op.create_table(
        "experiments",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shares", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_experiments"),
    )
    op.create_index("ix_experiments_status", "experiments", ["status"])
    op.create_index("ix_experiments_version", "experiments", ["version"])

    op.create_table(
        "experiment_events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("numbers", sa.JSON, nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("shares", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiment_events"),
    )
    op.create_index("ix_experiment_events_experiment_id", "experiment_events", ["experiment", "id"])


def downgrade() -> None:
    op.drop_index("ix_experiment_events_experiment_id", table_name="experiment_events")
    op.drop_table("experiment_events")
    op.drop_index("ix_experiments_version", table_name="experiments")
    op.drop_index("ix_experiments_status", table_name="experiments")
    op.drop_table("experiments")
    op.drop_index("ix_requests_experiment_started_at", table_name="requests")
    # SQLite (3.35+) drops plain columns in place as well.
    op.drop_column("requests", "experiment")
