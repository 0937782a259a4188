"""Persistence: SQLAlchemy tables, Alembic migrations and repositories.

Owns everything Keel keeps in its database (SQLite embedded, PostgreSQL at
scale): table definitions (``tables``), engines and migrations (``db``, with
the migration scripts shipped in ``migrations/``) and one repository per
domain noun (``keys`` for tenants and virtual keys), plus the request-path
cache in front of the key repository (``resolver``). May import ``keel.errors``
and ``keel.config``; never ``keel.api`` or ``keel.cli``, which call into it.
"""

from keel.store.db import make_engine, redact_url, upgrade
from keel.store.keys import KeyRecord, KeyStore, generate_key, hash_key
from keel.store.resolver import KeyLookup, KeyResolver, ResolverStats

__all__ = [
    "KeyLookup",
    "KeyRecord",
    "KeyResolver",
    "KeyStore",
    "ResolverStats",
    "generate_key",
    "hash_key",
    "make_engine",
    "redact_url",
    "upgrade",
]
