"""Persistence: SQLAlchemy tables, Alembic migrations and repositories.

Owns everything Keel keeps in its database (SQLite embedded, PostgreSQL at
scale): table definitions (``tables``), engines and migrations (``db``, with
the migration scripts shipped in ``migrations/``) and one repository per
domain noun (``keys`` for virtual keys; ``tenants`` for tenants, their limit
overrides and suspension; ``audit`` for the audit log every tenant and key
change writes; ``events`` for what the alert logic noticed; ``requests`` for
stored requests, spend rollups and feedback), plus the request-path cache in front of
the key repository (``resolver``). May import ``keel.errors``, ``keel.config``
and ``keel.telemetry.record`` (the record the request store is written from);
never ``keel.api`` or ``keel.cli``, which call into it.
"""

from keel.store.audit import AuditRecord, AuditStore
from keel.store.db import make_engine, redact_url, upgrade
from keel.store.events import Event, EventRecord, EventStore
from keel.store.feedback import FeedbackRecord
from keel.store.keys import KeyRecord, KeyStore, generate_key, hash_key
from keel.store.requests import RequestStore, StoredRequest, TraceFilter
from keel.store.resolver import KeyLookup, KeyResolver, ResolverStats
from keel.store.rollups import DIMENSIONS, MixRow, SpendRow, UsefulRow
from keel.store.tenants import UNSET, TenantRecord, TenantStore, apply_limit_changes

__all__ = [
    "DIMENSIONS",
    "UNSET",
    "AuditRecord",
    "AuditStore",
    "Event",
    "EventRecord",
    "EventStore",
    "FeedbackRecord",
    "KeyLookup",
    "KeyRecord",
    "KeyResolver",
    "KeyStore",
    "MixRow",
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
    "redact_url",
    "upgrade",
]
