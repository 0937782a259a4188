"""The prompt registry (immutable versions, labels, label moves) and eval runs.

Revision ID: 0004_prompt_registry_eval_runs
Revises: 0003_tenant_limits_audit_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_prompt_registry_eval_runs"
down_revision = "0003_tenant_limits_audit_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written out rather than imported from keel.store.tables: a migration is a
    # snapshot and must not change when the current table definitions do.
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("content", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_versions"),
        sa.UniqueConstraint("name", "version", name="uq_prompt_versions_name_version"),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", name="pk_prompt_labels"),
    )
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("prompt_name", sa.String(128), nullable=True),
        sa.Column("prompt_version", sa.String(64), nullable=True),
        sa.Column("prompt_hash", sa.String(128), nullable=True),
        sa.Column("dataset_hash", sa.String(128), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_eval_runs"),
    )
    op.create_index(
        "ix_eval_runs_prompt_name_version", "eval_runs", ["prompt_name", "prompt_version"]
    )
    op.create_table(
        "prompt_label_moves",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("to_version", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("eval_run_id", sa.Integer, nullable=True),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_label_moves"),
        sa.ForeignKeyConstraint(
            ["eval_run_id"],
            ["eval_runs.id"],
            name="fk_prompt_label_moves_eval_run_id_eval_runs",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_prompt_label_moves_name_label", "prompt_label_moves", ["name", "label"])


def downgrade() -> None:
    op.drop_index("ix_prompt_label_moves_name_label", table_name="prompt_label_moves")
    op.drop_table("prompt_label_moves")
    op.drop_index("ix_eval_runs_prompt_name_version", table_name="eval_runs")
    op.drop_table("eval_runs")
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
