"""The request-path key resolver: a small TTL cache in front of the key store.

Every request resolves its bearer key here, so a cache hit must cost no more
than a hash and a dict lookup, and a sick database must turn into a prompt
``StoreError`` (503 ``store_unavailable``) rather than a hung request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from keel._time import Clock, utcnow
from keel.errors import StoreError
from keel.store.keys import KeyRecord, hash_key, is_well_formed

_V = TypeVar("_V")


class KeyLookup(Protocol):
    """What :class:`KeyResolver` needs from a store; :class:`~keel.store.KeyStore` is one."""

    def resolve_hash(self, key_hash: str) -> KeyRecord | None: ...


@dataclass(slots=True)
class ResolverStats:
    """Counters for metrics and tests."""

    hits: int = 0  # answered from either cache
    misses: int = 0
    coalesced: int = 0  # misses that joined a lookup already in flight


@dataclass(slots=True)
class _Found:
    fresh_until: float
    record: KeyRecord


class KeyResolver:
    """Resolves bearer keys on the request path from two small TTL caches.

    Entries are keyed by the key's hash, so no plaintext key stays in memory.
    A found key is cached for ``ttl_s`` seconds and an unknown, revoked or
    expired one for ``negative_ttl_s``: that is how long a revocation (or a new
    key) can take to reach a gateway. Expiry is re-checked on every hit, so it
    is exact. Concurrent misses for one key share one database query, which
    fails with ``StoreError`` if the store has not answered within
    ``lookup_timeout_s``.

    Found keys and negative answers live in separate caches, of at most
    ``max_entries`` and ``max_negative_entries``, each dropping its oldest
    first: anyone can send endless well-formed random keys, and those must not
    push every tenant's entry out and turn each request into a query.
    """

    DEFAULT_TTL_S: ClassVar[float] = 5.0
    DEFAULT_NEGATIVE_TTL_S: ClassVar[float] = 1.0
    # Matches PostgreSQL's connect timeout in keel.store.db: a lookup that needs
    # a fresh connection to an unreachable database fails no later than that.
    DEFAULT_LOOKUP_TIMEOUT_S: ClassVar[float] = 5.0

    def __init__(
        self,
        store: KeyLookup,
        ttl_s: float = DEFAULT_TTL_S,
        negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
        *,
        max_entries: int = 10_000,
        max_negative_entries: int = 1_000,
        lookup_timeout_s: float = DEFAULT_LOOKUP_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.max_negative_entries = max_negative_entries
        self.lookup_timeout_s = lookup_timeout_s
        self.stats = ResolverStats()
        self._monotonic = monotonic
        self._clock = clock
        self._found: OrderedDict[str, _Found] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()  # hash -> fresh until
        self._inflight: dict[str, asyncio.Task[KeyRecord | None]] = {}

    async def resolve(self, plaintext: str) -> KeyRecord | None:
        """The active key ``plaintext`` names, or None; raises ``StoreError`` if the DB fails."""
        if not is_well_formed(plaintext):
            return None
        key_hash = hash_key(plaintext)
        now = self._monotonic()
        found = self._found.get(key_hash)
        if found is not None and found.fresh_until > now:
            self.stats.hits += 1
            return self._unexpired(found.record)
        unknown_until = self._unknown.get(key_hash)
        if unknown_until is not None and unknown_until > now:
            self.stats.hits += 1
            return None
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
        record = await asyncio.shield(task)
        return None if record is None else self._unexpired(record)

    def _unexpired(self, record: KeyRecord) -> KeyRecord | None:
        expires_at = record.expires_at
        # Most keys never expire; only those that do pay for reading the wall clock.
        if expires_at is not None and self._clock() >= expires_at:
            return None
        return record

    async def _load(self, key_hash: str) -> KeyRecord | None:
        bound = asyncio.timeout(self.lookup_timeout_s)
        try:
            async with bound:
                record = await asyncio.to_thread(self.store.resolve_hash, key_hash)
        except TimeoutError:
            if not bound.expired():
                raise  # the store's own TimeoutError, not our bound
            # The worker thread cannot be stopped; it finishes (or times out on
            # connecting) in the background and its answer is dropped.
            raise StoreError(
                f"looking up a key failed: the key store did not answer"
                f" within {self.lookup_timeout_s:g}s"
            ) from None
        finally:
            del self._inflight[key_hash]
        if record is not None and record.revoked_at is not None:
            record = None  # a store that returns revoked keys still gets them refused
        if record is None:
            self._found.pop(key_hash, None)
            _put(
                self._unknown,
                key_hash,
                self._monotonic() + self.negative_ttl_s,
                self.max_negative_entries,
            )
        else:
            self._unknown.pop(key_hash, None)
            _put(
                self._found,
                key_hash,
                _Found(self._monotonic() + self.ttl_s, record),
                self.max_entries,
            )
        return record

    def clear(self) -> None:
        """Forget every cached answer, e.g. after revoking a key in this process."""
        self._found.clear()
        self._unknown.clear()

    def __len__(self) -> int:
        return len(self._found) + len(self._unknown)


def _put(cache: OrderedDict[str, _V], key: str, value: _V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)  # the oldest entry


def _mark_retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
