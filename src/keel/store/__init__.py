"""Persistence: SQLAlchemy tables, Alembic migrations and repositories.

Owns everything Keel keeps in its database (SQLite embedded, PostgreSQL at
scale): table definitions (``tables``), engines and migrations (``db``, with
the migration scripts shipped in ``migrations/``) and one repository per
domain noun (``keys`` for virtual keys; ``tenants`` for tenants, their limit
overrides and suspension; ``audit`` for the audit log every tenant and key
change writes; ``events`` for what the alert logic noticed; ``requests`` for
stored requests, spend rollups and feedback; ``prompts`` for the prompt
registry's immutable versions, labels and label moves; ``evals`` for eval
runs, which qualify prompt versions for promotion; ``judge_cache`` for the
eval judge's verdicts; ``experiments`` for experiments and rollouts, their
shares and every decision), plus the request-path cache in front of the key
repository (``resolver``). May import
``keel.errors``, ``keel.config``, ``keel.telemetry.record`` (the record the
request store is written from), ``keel.prompts`` (the prompt file model
and its diff) and ``keel.experiments.spec`` (the experiment file model);
never ``keel.api`` or ``keel.cli``, which call into it.
"""

from keel.store.audit import AuditRecord, AuditStore
from keel.store.db import make_engine, redact_url, upgrade
from keel.store.evals import EvalRun, EvalRunStore, record_eval_run
from keel.store.events import Event, EventRecord, EventStore
from keel.store.experiments import (
    Applied,
    ExperimentEvent,
    ExperimentRecord,
    ExperimentStore,
)
from keel.store.feedback import FeedbackRecord
from keel.store.judge_cache import JudgeCache, JudgeCacheKey, JudgeCacheStats
from keel.store.keys import KeyRecord, KeyStore, generate_key, hash_key
from keel.store.prompts import (
    LabelMove,
    PromptLabel,
    PromptRegistry,
    PromptSummary,
    PromptVersion,
    PushResult,
)
from keel.store.requests import RequestStore, StoredRequest, TraceFilter
from keel.store.resolver import KeyLookup, KeyResolver, ResolverStats
from keel.store.rollups import DIMENSIONS, MixRow, SpendRow, UsefulRow
from keel.store.tenants import UNSET, TenantRecord, TenantStore, apply_limit_changes

__all__ = [
    "DIMENSIONS",
    "UNSET",
    "Applied",
    "AuditRecord",
    "AuditStore",
    "EvalRun",
    "EvalRunStore",
    "Event",
    "EventRecord",
    "EventStore",
    "ExperimentEvent",
    "ExperimentRecord",
    "ExperimentStore",
    "FeedbackRecord",
    "JudgeCache",
    "JudgeCacheKey",
    "JudgeCacheStats",
    "KeyLookup",
    "KeyRecord",
    "KeyResolver",
    "KeyStore",
    "LabelMove",
    "MixRow",
    "PromptLabel",
    "PromptRegistry",
    "PromptSummary",
    "PromptVersion",
    "PushResult",
    "RequestStore",
    "ResolverStats",
    "SpendRow",
    "StoredRequest",
    "TenantRecord",
    "TenantStore",
    "TraceFilter",
    "UsefulRow",
    "apply_limit_changes",
    "generate_key",
    "hash_key",
    "make_engine",
    "record_eval_run",
    "redact_url",
    "upgrade",
]
