"""Table definitions: the shape the migrations build, used by the repositories.

Timestamps are stored in UTC and always come back timezone-aware, on SQLite
(which has no timezone type) as on PostgreSQL. Constraint names follow one
convention so migrations can refer to them on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend; naive values are refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        utc = value.astimezone(UTC)
        # SQLite stores text: drop the offset so every row sorts and compares alike.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Free text an operator types (suspension and audit reasons).
REASON_LEN = 1000

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("tier", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # --- migration 0003 ---
    # Overrides of the tier's fields (a partial keel.config.Tier); NULL = none.
    sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
    # Set while the tenant is suspended (its kill switch is on).
    sa.Column("suspended_at", UTCDateTime, nullable=True),
    sa.Column("suspend_reason", sa.String(REASON_LEN), nullable=True),
    # Moves on every change, so replicas re-read only what changed.
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_tenants_updated_at", "updated_at"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # SHA-256 hex of the key: the auth lookup on every request goes through it.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    # Shown in listings and accepted by `keel keys revoke`.
    sa.Column("key_prefix", sa.String(12), nullable=False, index=True),
    sa.Column(
        "tenant_id",
        sa.Integer,
        sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(200), nullable=True),
    # Overrides the tenant's tier for this key when set.
    sa.Column("tier", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    # --- migration 0003 ---
    # Overrides of the tier's fields for this key only; NULL = none.
    sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
    # May call the admin API (/admin/*); still belongs to a tenant.
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
)

# --- requests, spend rollups, feedback (migration 0002) --------------------------
#
# Column widths are enforced by PostgreSQL (not SQLite), so the row builder in
# ``keel.store._rows`` clips caller-supplied text to them: one oversized
# ``user`` field must never fail the whole batch it arrived in.
ID_LEN = 128
NAME_LEN = 200
SHORT_LEN = 64
TAG_LEN = 16

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("request_id", sa.String(ID_LEN), primary_key=True),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("span_id", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("tenant", sa.String(ID_LEN), nullable=True),
    sa.Column("key_id", sa.Integer, nullable=True),
    sa.Column("end_user", sa.String(ID_LEN), nullable=True),
    sa.Column("feature", sa.String(ID_LEN), nullable=True),
    sa.Column("alias", sa.String(NAME_LEN), nullable=True),
    sa.Column("served_alias", sa.String(NAME_LEN), nullable=True),
    sa.Column("deployment", sa.String(NAME_LEN), nullable=True),
    sa.Column("provider_model", sa.String(NAME_LEN), nullable=True),
    sa.Column("operation", sa.String(TAG_LEN), nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("http_status", sa.SmallInteger, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("error_type", sa.String(ID_LEN), nullable=True),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("cached_input_tokens", sa.Integer, nullable=False),
    sa.Column("cache_write_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("usage_estimated", sa.Boolean, nullable=False),
    # Nano-USD, exact integer arithmetic in sums; NULL = unknown price, never 0.
    sa.Column("cost_nano", sa.BigInteger, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("attempt_count", sa.SmallInteger, nullable=False),
    sa.Column("prompt_name", sa.String(NAME_LEN), nullable=True),
    sa.Column("prompt_version", sa.String(SHORT_LEN), nullable=True),
    sa.Column("prompt_hash", sa.String(ID_LEN), nullable=True),
    # The experiment that assigned ``variant`` (keel.experiments), NULL for none; added
    # by migration 0006 (at the end of the table on disk: inserts name their columns).
    sa.Column("experiment", sa.String(ID_LEN), nullable=True),
    sa.Column("variant", sa.String(SHORT_LEN), nullable=True),
    sa.Column("cache", sa.String(TAG_LEN), nullable=True),
    sa.Column("guardrail", sa.String(TAG_LEN), nullable=True),
    sa.Column("shadow", sa.Boolean, nullable=False),
    # Per-request detail only (attempts, stages...): nothing static is repeated per row.
    sa.Column("detail", sa.JSON, nullable=False),
    # Prompt and answer, only when capture_content is on: SQL NULL otherwise.
    sa.Column("content", sa.JSON(none_as_null=True), nullable=True),
    sa.Index("ix_requests_tenant_started_at", "tenant", "started_at"),
    sa.Index("ix_requests_started_at", "started_at"),
    # The controller reads one experiment's requests since its step began.
    sa.Index("ix_requests_experiment_started_at", "experiment", "started_at"),
)

# The key of one rollup row. '' stands for "none" because NULLs never collide
# in a unique constraint, which would turn every upsert into a new row.
SPEND_KEY = (
    "day",
    "tenant",
    "end_user",
    "feature",
    "alias",
    "provider_model",
    "prompt_version",
    "variant",
)
SPEND_COUNTERS = (
    "requests",
    "errors",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_nano",
    "unknown_cost_requests",
)

spend_daily = sa.Table(
    "spend_daily",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("tenant", sa.String(ID_LEN), nullable=False),
    sa.Column("end_user", sa.String(ID_LEN), nullable=False),
    sa.Column("feature", sa.String(ID_LEN), nullable=False),
    sa.Column("alias", sa.String(NAME_LEN), nullable=False),
    sa.Column("provider_model", sa.String(NAME_LEN), nullable=False),
    sa.Column("prompt_version", sa.String(SHORT_LEN), nullable=False),
    sa.Column("variant", sa.String(SHORT_LEN), nullable=False),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in SPEND_COUNTERS),
    sa.UniqueConstraint(*SPEND_KEY, name="uq_spend_daily_key"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # No foreign key: retention deletes feedback with its request explicitly,
    # and request rows are bulk-inserted without paying for constraint checks.
    sa.Column("request_id", sa.String(ID_LEN), nullable=False, index=True),
    sa.Column("tenant", sa.String(ID_LEN), nullable=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("comment", sa.String(4000), nullable=True),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


# --- audit log and events (migration 0003) ------------------------------------

ACTOR_LEN = 200
TARGET_LEN = 256

# One row per change to a tenant or key, written in the change's transaction.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(ACTOR_LEN), nullable=False),  # cli:<user>, key:<prefix>
    sa.Column("action", sa.String(SHORT_LEN), nullable=False),  # tenant.suspend, key.revoke
    sa.Column("target", sa.String(TARGET_LEN), nullable=False),  # tenant:acme, key:sk-keel-Ab3x
    sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("reason", sa.String(REASON_LEN), nullable=True),
    sa.Index("ix_audit_log_target_at", "target", "at"),
    sa.Index("ix_audit_log_at", "at"),
)

# What the alert logic noticed (budget thresholds crossed, cost anomalies...).
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("tenant", sa.String(ID_LEN), nullable=True),
    sa.Column("kind", sa.String(SHORT_LEN), nullable=False),
    sa.Column("severity", sa.String(TAG_LEN), nullable=False),
    sa.Column("message", sa.String(REASON_LEN), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_events_tenant_at", "tenant", "at"),
    sa.Index("ix_events_at", "at"),
)


# --- prompt registry and eval runs (migration 0004) ---------------------------

PROMPT_NAME_LEN = 128  # keel.prompts.model.NAME_PATTERN
LABEL_LEN = 64

# One row per pushed prompt version. Immutable: nothing ever updates a row.
prompt_versions = sa.Table(
    "prompt_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(PROMPT_NAME_LEN), nullable=False),
    sa.Column("version", sa.String(SHORT_LEN), nullable=False),
    sa.Column("content_hash", sa.String(ID_LEN), nullable=False),  # sha256:<hex>
    sa.Column("content", sa.JSON, nullable=False),  # keel.prompts.model.content_of
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("owner", sa.String(ACTOR_LEN), nullable=True),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(ACTOR_LEN), nullable=False),
    sa.UniqueConstraint("name", "version", name="uq_prompt_versions_name_version"),
)

# Where each label points now; moved only together with a prompt_label_moves row.
prompt_labels = sa.Table(
    "prompt_labels",
    metadata,
    sa.Column("name", sa.String(PROMPT_NAME_LEN), primary_key=True),
    sa.Column("label", sa.String(LABEL_LEN), primary_key=True),
    sa.Column("version", sa.String(SHORT_LEN), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# What eval suites concluded; a passing run qualifies a version for promotion.
eval_runs = sa.Table(
    "eval_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("suite", sa.String(NAME_LEN), nullable=False),
    # NULL when the run's target was a model alias rather than a prompt version.
    sa.Column("prompt_name", sa.String(PROMPT_NAME_LEN), nullable=True),
    sa.Column("prompt_version", sa.String(SHORT_LEN), nullable=True),
    # The content hash the run scored, when known: promotion then requires it to
    # be the stored version's, so a run on an unpushed edit qualifies nothing.
    sa.Column("prompt_hash", sa.String(ID_LEN), nullable=True),
    sa.Column("dataset_hash", sa.String(ID_LEN), nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=True),  # NULL = unknown, never 0
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_eval_runs_prompt_name_version", "prompt_name", "prompt_version"),
)

# Every label move, oldest first by id: the history, and the change feed gateway
# replicas poll (moves are written one at a time, so ids commit in order).
prompt_label_moves = sa.Table(
    "prompt_label_moves",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(PROMPT_NAME_LEN), nullable=False),
    sa.Column("label", sa.String(LABEL_LEN), nullable=False),
    sa.Column("from_version", sa.String(SHORT_LEN), nullable=True),  # NULL: label was new
    sa.Column("to_version", sa.String(SHORT_LEN), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(ACTOR_LEN), nullable=False),
    sa.Column("reason", sa.String(REASON_LEN), nullable=True),
    sa.Column(
        "eval_run_id",
        sa.Integer,
        sa.ForeignKey("eval_runs.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    sa.Column("forced", sa.Boolean, nullable=False),
    sa.Column("kind", sa.String(TAG_LEN), nullable=False),  # promote | rollback
    sa.Index("ix_prompt_label_moves_name_label", "name", "label"),
)

# --- migration 0005 ---
# Judge verdicts, so re-running an unchanged eval suite calls no judge. The key
# is a sha256 over the judge alias, the judge prompt's hash and the hashes of
# what the judge saw (keel.store.judge_cache.JudgeCacheKey); the parts are
# kept beside it to prune by alias or prompt. Hashes are lower-case hex.
HASH_LEN = 64
judge_cache = sa.Table(
    "judge_cache",
    metadata,
    sa.Column("key", sa.String(HASH_LEN), primary_key=True),
    sa.Column("judge_alias", sa.String(NAME_LEN), nullable=False),
    sa.Column("judge_prompt_hash", sa.String(HASH_LEN), nullable=False),
    sa.Column("output_hash", sa.String(HASH_LEN), nullable=False),
    sa.Column("reference_hash", sa.String(HASH_LEN), nullable=True),  # NULL: not shown
    sa.Column("context_hash", sa.String(HASH_LEN), nullable=True),  # NULL: not shown
    sa.Column("verdict", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_judge_cache_judge_alias", "judge_alias"),
)


# --- experiments and rollouts (migration 0006) ---------------------------------

EXPERIMENT_NAME_LEN = 128  # keel.experiments.spec.Experiment.name

# One row per experiment: its file, where it stands, and the shares gateways apply.
experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("name", sa.String(EXPERIMENT_NAME_LEN), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),  # the Experiment file, as JSON
    sa.Column("status", sa.String(TAG_LEN), nullable=False),  # running | paused | ...
    sa.Column("step_index", sa.Integer, nullable=False),  # ramps: index into ramp.steps
    sa.Column("step_started_at", UTCDateTime, nullable=False),
    sa.Column("shares", sa.JSON, nullable=False),  # percent per variant: what assignment uses
    # A feed position: every change takes the highest version of any row plus one,
    # one change at a time, so replicas re-read only rows above what they last saw.
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(ACTOR_LEN), nullable=False),
    # The controller replica analysing it now, until when (keel.experiments.runtime).
    sa.Column("lease_owner", sa.String(ID_LEN), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Index("ix_experiments_status", "status"),
    sa.Index("ix_experiments_version", "version"),
)

# Every decision and operator action on an experiment, with the numbers behind it.
experiment_events = sa.Table(
    "experiment_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("experiment", sa.String(EXPERIMENT_NAME_LEN), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    # controller, cli:<os user> or key:<key prefix>
    sa.Column("actor", sa.String(ACTOR_LEN), nullable=False),
    sa.Column("action", sa.String(TAG_LEN), nullable=False),  # start | advance | hold | ...
    sa.Column("reasons", sa.JSON, nullable=False),  # list of sentences
    sa.Column("numbers", sa.JSON, nullable=False),  # the metrics and statistics decided on
    sa.Column("step_index", sa.Integer, nullable=False),  # after the event
    sa.Column("shares", sa.JSON, nullable=False),  # after the event
    sa.Index("ix_experiment_events_experiment_id", "experiment", "id"),
)
