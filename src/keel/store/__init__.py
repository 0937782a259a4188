"""Persistence: SQLAlchemy tables, Alembic migrations and repositories.

Owns everything Keel keeps in its database (SQLite embedded, PostgreSQL at
scale): table definitions (``tables``), engines and migrations (``db``, with
the migration scripts shipped in ``migrations/``) and one repository per
domain noun (``keys`` for tenants and virtual keys; ``requests`` for stored
requests, spend rollups and feedback), plus the request-path cache in front of
the key repository (``resolver``). May import ``keel.errors``, ``keel.config``
and ``keel.telemetry.record`` (the record the request store is written from);
never ``keel.api`` or ``keel.cli``, which call into it.
"""

from keel.store.db import make_engine, redact_url, upgrade
from keel.store.feedback import FeedbackRecord
from keel.store.keys import KeyRecord, KeyStore, generate_key, hash_key
from keel.store.requests import RequestStore, StoredRequest, TraceFilter
from keel.store.resolver import KeyLookup, KeyResolver, ResolverStats
from keel.store.rollups import DIMENSIONS, MixRow, SpendRow, UsefulRow

__all__ = [
    "DIMENSIONS",
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
    "TraceFilter",
    "UsefulRow",
    "generate_key",
    "hash_key",
    "make_engine",
    "redact_url",
    "upgrade",
]
