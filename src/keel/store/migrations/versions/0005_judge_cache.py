"""The eval judge's verdict cache.

Revision ID: 0005_judge_cache
Revises: 0004_prompt_registry_eval_runs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_judge_cache"
down_revision = "0004_prompt_registry_eval_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written out rather than imported from keel.store.tables: a migration is a
    # snapshot and must not change when the current table definitions do.
    op.create_table(
        "judge_cache",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("judge_alias", sa.String(200), nullable=False),
        sa.Column("judge_prompt_hash", sa.String(64), nullable=False),
        sa.Column("output_hash", sa.String(64), nullable=False),
        sa.Column("reference_hash", sa.String(64), nullable=True),
        sa.Column("context_hash", sa.String(64), nullable=True),
        sa.Column("verdict", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_judge_cache"),
    )
    op.create_index("ix_judge_cache_judge_alias", "judge_cache", ["judge_alias"])


def downgrade() -> None:
    op.drop_index("ix_judge_cache_judge_alias", table_name="judge_cache")
    op.drop_table("judge_cache")
