"""Virtual keys: generation, hashing, the key repository and the request-path resolver.

A key is ``sk-keel-`` followed by 43 URL-safe base64 characters (32 random
bytes). The store keeps its SHA-256 hex digest and its first 12 characters
for display; the plaintext exists only in the answer to ``create_key``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa

from keel.errors import InvalidRequest, NotFound
from keel.store.db import translate_errors
from keel.store.tables import api_keys, tenants

KEY_PREFIX = "sk-keel-"
DISPLAY_CHARS = 12
_KEY_BYTES = 32
# 32 bytes encode to 43 base64 characters once the "=" padding is dropped.
_KEY_PATTERN = re.compile(r"sk-keel-[A-Za-z0-9_-]{43}")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]*")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def generate_key() -> str:
    """A new random key: ``sk-keel-`` + 32 bytes from ``secrets``, URL-safe base64."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).rstrip(b"=")
    return KEY_PREFIX + raw.decode("ascii")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for ``key``.

    A plain fast hash is enough: keys carry 256 random bits, so there is
    nothing to brute-force, and the lookup runs on every request.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the gateway knows about a key; never the key or its hash."""

    id: int
    tenant: str
    tier: str | None  # the key's own tier, else its tenant's
    name: str | None
    key_prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def active_at(self, now: datetime) -> bool:
        """True if the key is neither revoked nor expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def status_at(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired``, for listings."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.active_at(now) else "expired"


_SELECT = sa.select(
    api_keys.c.id,
    tenants.c.name.label("tenant"),
    sa.func.coalesce(api_keys.c.tier, tenants.c.tier).label("tier"),
    api_keys.c.name,
    api_keys.c.key_prefix,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
).join_from(api_keys, tenants, api_keys.c.tenant_id == tenants.c.id)


def _record(row: sa.RowMapping) -> KeyRecord:
    return KeyRecord(**row)


def _check_name(value: str, param: str, max_len: int) -> str:
    if not (_NAME_PATTERN.fullmatch(value) and len(value) <= max_len):
        raise InvalidRequest(
            f"{param}: {value!r} is not a valid {param}; expected up to {max_len} letters,"
            " digits and . _ : @ / - starting with a letter or digit",
            param=param,
        )
    return value


class KeyStore:
    """Keys and tenants in the database; every method is synchronous and short.

    The gateway calls it through :class:`KeyResolver`, off the event loop.
    """

    def __init__(self, engine: sa.Engine, *, clock: Clock = _utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def create_key(
        self,
        tenant: str,
        *,
        tier: str | None = None,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, KeyRecord]:
        """Create a key for ``tenant`` (created too if new); return the plaintext once."""
        _check_name(tenant, "tenant", 128)
        if tier is not None:
            _check_name(tier, "tier", 64)
        if name is not None and len(name) > 200:
            raise InvalidRequest("name: at most 200 characters", param="name")
        now = self._clock()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidRequest("expires_at: must be timezone-aware", param="expires_at")
            if expires_at <= now:
                raise InvalidRequest("expires_at: must be in the future", param="expires_at")
        key = generate_key()
        with translate_errors(self._engine, "creating a key"), self._engine.begin() as conn:
            tenant_id = self._ensure_tenant(conn, tenant, now)
            key_id = conn.execute(
                sa.insert(api_keys)
                .values(
                    key_hash=hash_key(key),
                    key_prefix=key[:DISPLAY_CHARS],
                    tenant_id=tenant_id,
                    name=name,
                    tier=tier,
                    created_at=now,
                    expires_at=expires_at,
                )
                .returning(api_keys.c.id)
            ).scalar_one()
            row = conn.execute(_SELECT.where(api_keys.c.id == key_id)).mappings().one()
        return key, _record(row)

    @staticmethod
    def _ensure_tenant(conn: sa.Connection, name: str, now: datetime) -> int:
        # INSERT .. ON CONFLICT DO NOTHING, so two first keys for one new tenant
        # created at once both succeed instead of one hitting the unique index.
        insert: Any
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        conn.execute(insert(tenants).values(name=name, created_at=now).on_conflict_do_nothing())
        tenant_id: int = conn.execute(
            sa.select(tenants.c.id).where(tenants.c.name == name)
        ).scalar_one()
        return tenant_id

    def resolve(self, plaintext: str) -> KeyRecord | None:
        """The active key ``plaintext`` names, or None if unknown, revoked or expired."""
        if not _KEY_PATTERN.fullmatch(plaintext):
            return None  # not one of ours: no need to ask the database
        return self.resolve_hash(hash_key(plaintext))

    def resolve_hash(self, key_hash: str) -> KeyRecord | None:
        """Like :meth:`resolve`, given the key's hash."""
        with translate_errors(self._engine, "looking up a key"), self._engine.connect() as conn:
            row = (
                conn.execute(_SELECT.where(api_keys.c.key_hash == key_hash))
                .mappings()
                .one_or_none()
            )
        if row is None:
            return None
        record = _record(row)
        return record if record.active_at(self._clock()) else None

    def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        """Every key (revoked and expired included), oldest first, optionally for one tenant."""
        query = _SELECT.order_by(api_keys.c.id)
        if tenant is not None:
            query = query.where(tenants.c.name == tenant)
        with translate_errors(self._engine, "listing keys"), self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def revoke(self, key_id_or_prefix: str | int) -> KeyRecord:
        """Revoke the key with this id, 12-character prefix or full plaintext.

        Revoking a revoked key changes nothing and returns it. Raises
        ``NotFound`` if nothing matches and ``InvalidRequest`` if a prefix is
        shared by several keys (use the id then).
        """
        where = self._match(key_id_or_prefix)
        with translate_errors(self._engine, "revoking a key"), self._engine.begin() as conn:
            rows = conn.execute(_SELECT.where(where).limit(2)).all()
            if not rows:
                raise NotFound(f"no key matches {key_id_or_prefix!r}", param="key")
            if len(rows) > 1:
                raise InvalidRequest(
                    f"{key_id_or_prefix!r} matches several keys; revoke by id instead",
                    param="key",
                )
            key_id = rows[0].id
            conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            row = conn.execute(_SELECT.where(api_keys.c.id == key_id)).mappings().one()
        return _record(row)

    @staticmethod
    def _match(key: str | int) -> sa.ColumnElement[bool]:
        if isinstance(key, int) or (key.isascii() and key.isdigit()):
            return api_keys.c.id == int(key)
        if _KEY_PATTERN.fullmatch(key):
            return api_keys.c.key_hash == hash_key(key)
        if key.startswith(KEY_PREFIX) and len(key) == DISPLAY_CHARS:
            return api_keys.c.key_prefix == key
        raise InvalidRequest(
            f"{key!r} is neither a key id nor a key prefix like {KEY_PREFIX}Ab3x", param="key"
        )


class KeyLookup(Protocol):
    """What :class:`KeyResolver` needs from a store; :class:`KeyStore` is one."""

    def resolve_hash(self, key_hash: str) -> KeyRecord | None: ...


@dataclass(slots=True)
class ResolverStats:
    """Counters for metrics and tests."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0  # misses that joined a lookup already in flight


@dataclass(slots=True)
class _Entry:
    fresh_until: float
    record: KeyRecord | None


class KeyResolver:
    """Resolves bearer keys on the request path from a small TTL cache.

    Entries are keyed by the key's hash, so no plaintext key stays in memory.
    A found key is cached for ``ttl_s`` seconds and an unknown, revoked or
    expired one for ``negative_ttl_s``: that is how long a revocation (or a new
    key) can take to reach a gateway. Expiry is re-checked on every hit, so it
    is exact. Concurrent misses for one key share one database query, and the
    cache holds at most ``max_entries``, dropping the oldest first.
    """

    DEFAULT_TTL_S: ClassVar[float] = 5.0
    DEFAULT_NEGATIVE_TTL_S: ClassVar[float] = 1.0

    def __init__(
        self,
        store: KeyLookup,
        ttl_s: float = DEFAULT_TTL_S,
        negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
        *,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Clock = _utcnow,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.stats = ResolverStats()
        self._monotonic = monotonic
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[KeyRecord | None]] = {}

    async def resolve(self, plaintext: str) -> KeyRecord | None:
        """The active key ``plaintext`` names, or None; raises ``StoreError`` if the DB fails."""
        if not _KEY_PATTERN.fullmatch(plaintext):
            return None
        key_hash = hash_key(plaintext)
        entry = self._cache.get(key_hash)
        if entry is not None and entry.fresh_until > self._monotonic():
            self.stats.hits += 1
            record = entry.record
            return record if record is not None and record.active_at(self._clock()) else None
        task = self._inflight.get(key_hash)
        if task is None:
            self.stats.misses += 1
            task = asyncio.ensure_future(self._load(key_hash))
            # If every waiter is cancelled, nobody reads a failure; mark it seen.
            task.add_done_callback(_mark_retrieved)
            self._inflight[key_hash] = task
        else:
            self.stats.coalesced += 1
        # Shielded: a caller that disconnects must not cancel the lookup others await.
        return await asyncio.shield(task)

    async def _load(self, key_hash: str) -> KeyRecord | None:
        try:
            record = await asyncio.to_thread(self.store.resolve_hash, key_hash)
        finally:
            del self._inflight[key_hash]
        ttl = self.ttl_s if record is not None else self.negative_ttl_s
        self._cache[key_hash] = _Entry(self._monotonic() + ttl, record)
        self._cache.move_to_end(key_hash)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)  # the oldest entry
        return record

    def clear(self) -> None:
        """Forget every cached answer, e.g. after revoking a key in this process."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


def _mark_retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
