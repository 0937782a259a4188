"""Virtual keys: generation, hashing and the key repository.

A key is ``sk-keel-`` followed by 43 URL-safe base64 characters (32 random
bytes). The store keeps its SHA-256 hex digest and its first 12 characters
for display; the plaintext exists only in the answer to ``create_key``.
The request path reads keys through ``keel.store.resolver``. Creating and
revoking a key each write one audit row in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.config import Tier, check_override, check_tier
from keel.errors import InvalidRequest, NotFound
from keel.store.audit import record_change
from keel.store.db import translate_errors
from keel.store.tables import api_keys, tenants

KEY_PREFIX = "sk-keel-"
DISPLAY_CHARS = 12
_KEY_BYTES = 32
# 32 bytes encode to 43 base64 characters once the "=" padding is dropped.
_KEY_PATTERN = re.compile(r"sk-keel-[A-Za-z0-9_-]{43}")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]*")

# Who made a change when the caller does not say (library use, tests).
DEFAULT_ACTOR = "system"


def generate_key() -> str:
    """A new random key: ``sk-keel-`` + 32 bytes from ``secrets``, URL-safe base64."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).rstrip(b"=")
    return KEY_PREFIX + raw.decode("ascii")


def is_well_formed(key: str) -> bool:
    """True if ``key`` has the shape of a Keel key; anything else is never looked up."""
    return _KEY_PATTERN.fullmatch(key) is not None


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
    # The key's own overrides of its tier's fields (its tenant's come from the
    # tenant store); None when it has none.
    limits: Mapping[str, Any] | None = None
    admin: bool = False  # may call the admin API
    # The key's own tier only (``tier`` falls back to the tenant's): the
    # gateway takes the tenant's from its tenant directory, which is fresher.
    own_tier: str | None = None

    def active_at(self, now: datetime) -> bool:
        """True if the key is neither revoked nor expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the CLI and the admin API; never the key or its hash."""
        return {
            "id": self.id,
            "key_prefix": self.key_prefix,
            "tenant": self.tenant,
            "tier": self.tier,
            "name": self.name,
            "admin": self.admin,
            "limits": None if self.limits is None else dict(self.limits),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
        }

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
    api_keys.c.limits,
    api_keys.c.admin,
    api_keys.c.tier.label("own_tier"),
).join_from(api_keys, tenants, api_keys.c.tenant_id == tenants.c.id)


def _record(row: sa.RowMapping) -> KeyRecord:
    return KeyRecord(**row)


def key_target(record: KeyRecord) -> str:
    """How the audit log names a key: ``key:`` and its 12-character prefix."""
    return f"key:{record.key_prefix}"


def _audited(record: KeyRecord) -> dict[str, Any]:
    """What the audit log keeps of a key: never the key or its hash."""
    return {
        "id": record.id,
        "tenant": record.tenant,
        "tier": record.own_tier,
        "name": record.name,
        "admin": record.admin,
        "limits": None if record.limits is None else dict(record.limits),
        "expires_at": _iso(record.expires_at),
        "revoked_at": _iso(record.revoked_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def tenant_target(name: str) -> str:
    """How the audit log names a tenant: ``tenant:`` and its name."""
    return f"tenant:{name}"


def tenant_state(
    tier: str | None,
    limits: Mapping[str, Any] | None,
    suspended_at: datetime | None,
    suspend_reason: str | None,
) -> dict[str, Any]:
    """What the audit log keeps of a tenant, before and after a change."""
    return {
        "tier": tier,
        "limits": None if limits is None else dict(limits),
        "suspended_at": _iso(suspended_at),
        "suspend_reason": suspend_reason,
    }


def check_name(value: str, param: str, max_len: int) -> str:
    """``value`` if it is a valid tenant, tier or key name; else ``InvalidRequest`` on ``param``."""
    if not (_NAME_PATTERN.fullmatch(value) and len(value) <= max_len):
        raise InvalidRequest(
            f"{param}: {value!r} is not a valid {param}; expected up to {max_len} letters,"
            " digits and . _ : @ / - starting with a letter or digit",
            param=param,
        )
    return value


def check_tier_name(
    tier: str | None, known: Collection[str] | None, param: str = "tier"
) -> str | None:
    """``tier`` if well formed and, when ``known`` is given, one of those names."""
    if tier is None:
        return None
    check_name(tier, param, 64)
    if known is not None and tier not in known:
        names = ", ".join(sorted(known)) if known else "none (keel.yaml has no tiers:)"
        raise InvalidRequest(f'{param}: unknown tier "{tier}"; known tiers: {names}', param=param)
    return tier


def check_limits(
    limits: Mapping[str, Any] | None,
    *,
    param: str = "limits",
    aliases: Collection[str] | None = None,
) -> dict[str, Any] | None:
    """A tier override, validated; an empty one is None (no override).

    Problems raise ``InvalidRequest`` naming the field, such as
    ``limits.tenant.rpm: Input should be greater than 0``. With ``aliases``,
    model names the override refers to must be among them.
    """
    if limits is None:
        return None
    problems = check_override(limits, where=param)
    if not problems and aliases is not None:
        problems = check_tier(param, Tier.model_validate(limits), dict.fromkeys(aliases))
    if problems:
        first = problems[0]
        field = first.split(":", 1)[0]
        raise InvalidRequest("; ".join(problems), param=field)
    return dict(limits) or None


class KeyStore:
    """Keys and tenants in the database; every method is synchronous and short.

    The gateway calls it through :class:`KeyResolver`, off the event loop.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Clock = utcnow,
        tiers: Collection[str] | None = None,
        aliases: Collection[str] | None = None,
    ) -> None:
        """``tiers`` and ``aliases``, when given, are the names a key may refer to."""
        self._engine = engine
        self._clock = clock
        self._tiers = tiers
        self._aliases = aliases

    def create_key(
        self,
        tenant: str,
        *,
        tier: str | None = None,
        name: str | None = None,
        expires_at: datetime | None = None,
        limits: Mapping[str, Any] | None = None,
        admin: bool = False,
        actor: str = DEFAULT_ACTOR,
    ) -> tuple[str, KeyRecord]:
        """Create a key for ``tenant`` (created too if new); return the plaintext once.

        ``limits`` overrides fields of the key's tier for this key only;
        ``admin`` lets the key call the admin API. The creation is audited
        as ``key.create`` by ``actor`` (and a new tenant as ``tenant.create``).
        """
        check_name(tenant, "tenant", 128)
        check_tier_name(tier, self._tiers)
        override = check_limits(limits, aliases=self._aliases)
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
            tenant_id = self._ensure_tenant(conn, tenant, now, actor)
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
                    limits=override,
                    admin=admin,
                )
                .returning(api_keys.c.id)
            ).scalar_one()
            row = conn.execute(_SELECT.where(api_keys.c.id == key_id)).mappings().one()
            record = _record(row)
            record_change(
                conn,
                at=now,
                actor=actor,
                action="key.create",
                target=key_target(record),
                before=None,
                after=_audited(record),
            )
        return key, record

    @staticmethod
    def _ensure_tenant(conn: sa.Connection, name: str, now: datetime, actor: str) -> int:
        # INSERT .. ON CONFLICT DO NOTHING, so two first keys for one new tenant
        # created at once both succeed instead of one hitting the unique index.
        insert: Any
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # RETURNING, not rowcount: psycopg does not report 0 for a skipped insert.
        created = conn.execute(
            insert(tenants)
            .values(name=name, created_at=now, updated_at=now)
            .on_conflict_do_nothing()
            .returning(tenants.c.id)
        ).scalar_one_or_none()
        if created is not None:
            record_change(
                conn,
                at=now,
                actor=actor,
                action="tenant.create",
                target=tenant_target(name),
                before=None,
                after=tenant_state(None, None, None, None),
            )
        tenant_id: int = conn.execute(
            sa.select(tenants.c.id).where(tenants.c.name == name)
        ).scalar_one()
        return tenant_id

    def resolve(self, plaintext: str) -> KeyRecord | None:
        """The active key ``plaintext`` names, or None if unknown, revoked or expired."""
        if not is_well_formed(plaintext):
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

    def revoke(
        self,
        key_id_or_prefix: str | int,
        *,
        actor: str = DEFAULT_ACTOR,
        reason: str | None = None,
    ) -> KeyRecord:
        """Revoke the key with this id, 12-character prefix or full plaintext.

        The revocation is audited as ``key.revoke`` by ``actor``. Revoking a
        revoked key changes nothing (and audits nothing) and returns it. Raises
        ``NotFound`` if nothing matches and ``InvalidRequest`` if a prefix is
        shared by several keys (use the id then).
        """
        where = self._match(key_id_or_prefix)
        with translate_errors(self._engine, "revoking a key"), self._engine.begin() as conn:
            rows = conn.execute(_SELECT.where(where).limit(2)).mappings().all()
            if not rows:
                raise NotFound(f"no key matches {_shown(key_id_or_prefix)}", param="key")
            if len(rows) > 1:
                raise InvalidRequest(
                    f"{_shown(key_id_or_prefix)} matches several keys; revoke by id instead",
                    param="key",
                )
            before = _record(rows[0])
            now = self._clock()
            revoked = conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == before.id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            ).rowcount
            row = conn.execute(_SELECT.where(api_keys.c.id == before.id)).mappings().one()
            record = _record(row)
            if revoked:
                record_change(
                    conn,
                    at=now,
                    actor=actor,
                    action="key.revoke",
                    target=key_target(record),
                    before=_audited(before),
                    after=_audited(record),
                    reason=reason,
                )
        return record

    def count_keys(self, tenant: str, *, active_only: bool = False) -> int:
        """How many keys ``tenant`` has (only active ones with ``active_only``)."""
        query = (
            sa.select(sa.func.count())
            .select_from(api_keys.join(tenants, api_keys.c.tenant_id == tenants.c.id))
            .where(tenants.c.name == tenant)
        )
        if active_only:
            now = self._clock()
            query = query.where(
                api_keys.c.revoked_at.is_(None),
                sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
            )
        with translate_errors(self._engine, "counting keys"), self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _match(key: str | int) -> sa.ColumnElement[bool]:
        if isinstance(key, int) or (key.isascii() and key.isdigit()):
            return api_keys.c.id == int(key)
        if _KEY_PATTERN.fullmatch(key):
            return api_keys.c.key_hash == hash_key(key)
        if key.startswith(KEY_PREFIX) and len(key) == DISPLAY_CHARS:
            return api_keys.c.key_prefix == key
        raise InvalidRequest(
            f"{_shown(key)} is neither a key id, a key prefix like {KEY_PREFIX}Ab3x nor a key",
            param="key",
        )


def _shown(key: str | int) -> str:
    """``key`` as it may appear in an error: at most its first 12 characters.

    What is typed at ``revoke`` may be a whole key (or someone else's secret
    pasted by mistake); errors reach terminals, CI logs and shell history, so
    they echo no more than the prefix that listings already show.
    """
    if isinstance(key, int):
        return str(key)
    text = key
    if len(text) <= DISPLAY_CHARS:
        return repr(text)
    return repr(text[:DISPLAY_CHARS] + "...")
