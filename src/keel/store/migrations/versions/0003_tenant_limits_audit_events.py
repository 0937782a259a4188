"""Tenant and key limit overrides, suspension, admin keys, the audit log and events.

Revision ID: 0003_tenant_limits_audit_events
Revises: 0002_requests_rollups_feedback
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_tenant_limits_audit_events"
down_revision = "0002_requests_rollups_feedback"
branch_labels = None
depends_on = None

# Only ever read by the migration itself: every row gets its created_at below.
_EPOCH = "1970-01-01 00:00:00.000000"


def upgrade() -> None:
    # Written out rather than imported from keel.store.tables: a migration is a
    # snapshot and must not change when the current table definitions do.
    #
    # Columns are added in place (ALTER TABLE ADD COLUMN), never by rebuilding
    # the table: SQLite's rebuild would drop ``tenants``, which the RESTRICT
    # foreign key from ``api_keys`` refuses while foreign keys are enforced.
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("tenants", sa.Column("limits", sa.JSON, nullable=True))
    op.add_column("tenants", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tenants", sa.Column("suspend_reason", sa.String(1000), nullable=True))
    if sqlite:
        # SQLite adds a NOT NULL column only with a default; it is never used.
        op.add_column(
            "tenants",
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.text(f"'{_EPOCH}'"),
            ),
        )
        op.execute("UPDATE tenants SET updated_at = created_at")
    else:
        op.add_column("tenants", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        op.execute("UPDATE tenants SET updated_at = created_at")
        op.alter_column("tenants", "updated_at", nullable=False)
    op.create_index("ix_tenants_updated_at", "tenants", ["updated_at"])

    op.add_column("api_keys", sa.Column("limits", sa.JSON, nullable=True))
    op.add_column(
        "api_keys",
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_target_at", "audit_log", ["target", "at"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_tenant_at", "events", ["tenant", "at"])
    op.create_index("ix_events_at", "events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_events_at", table_name="events")
    op.drop_index("ix_events_tenant_at", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_target_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_tenants_updated_at", table_name="tenants")
    # SQLite (3.35+) drops plain columns in place as well.
    op.drop_column("api_keys", "admin")
    op.drop_column("api_keys", "limits")
    for column in ("updated_at", "suspend_reason", "suspended_at", "limits"):
        op.drop_column("tenants", column)
