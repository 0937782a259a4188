"""The request-path key resolver: caching, coalescing, bounds and store failures."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from keystore_support import T0, UNKNOWN, Clock, QueryCounter

from keel.errors import StoreError
from keel.store import KeyRecord, KeyResolver, KeyStore, generate_key, hash_key


async def test_cache_hits_do_not_touch_the_database(store: KeyStore, queries: QueryCounter) -> None:
    key, record = store.create_key("acme")
    resolver = KeyResolver(store)
    queries.count = 0

    assert await resolver.resolve(key) == record
    assert queries.count == 1
    for _ in range(20):
        assert await resolver.resolve(key) == record
    assert await resolver.resolve(UNKNOWN) is None
    assert await resolver.resolve(UNKNOWN) is None
    assert await resolver.resolve("not a key") is None

    assert queries.count == 2  # one per distinct well-formed key
    assert resolver.stats.hits == 21 and resolver.stats.misses == 2


async def test_cache_is_keyed_by_hash_not_plaintext(store: KeyStore) -> None:
    key, _ = store.create_key("acme")
    resolver = KeyResolver(store)
    await resolver.resolve(key)
    assert key not in repr(vars(resolver))
    assert hash_key(key) in repr(vars(resolver))


async def test_revocation_reaches_the_resolver_after_the_ttl(
    store: KeyStore, queries: QueryCounter
) -> None:
    clock = Clock(datetime.now(UTC))
    key, record = store.create_key("acme")
    resolver = KeyResolver(store, ttl_s=5.0, negative_ttl_s=1.0, monotonic=clock.monotonic)
    assert await resolver.resolve(key) == record
    store.revoke(record.id)

    clock.mono += 4.9
    assert await resolver.resolve(key) == record  # still cached: the documented delay
    clock.mono += 0.2
    assert await resolver.resolve(key) is None
    before = queries.count
    clock.mono += 0.9
    assert await resolver.resolve(key) is None  # negative answers are cached too
    assert queries.count == before


async def test_expiry_is_exact_even_when_cached(engine: sa.Engine) -> None:
    clock = Clock()
    store = KeyStore(engine, clock=clock)
    key, record = store.create_key("acme", expires_at=T0 + timedelta(seconds=30))
    resolver = KeyResolver(store, ttl_s=60.0, monotonic=clock.monotonic, clock=clock)

    assert await resolver.resolve(key) == record
    clock.now = T0 + timedelta(seconds=30)
    assert await resolver.resolve(key) is None
    assert resolver.stats.hits == 1


async def test_cache_is_bounded_and_drops_the_oldest(store: KeyStore) -> None:
    created = [store.create_key("acme")[0] for _ in range(3)]
    resolver = KeyResolver(store, max_entries=2)
    for key in created:
        await resolver.resolve(key)
    assert len(resolver) == 2

    await resolver.resolve(created[2])
    await resolver.resolve(created[0])  # evicted first, so a miss again
    assert resolver.stats.hits == 1 and resolver.stats.misses == 4


class GatedStore:
    """Wraps a store; lookups block until released, so misses pile up deterministically."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.calls = 0

    def resolve_hash(self, key_hash: str) -> KeyRecord | None:
        self.calls += 1
        if not self.release.wait(timeout=10):
            raise TimeoutError("the test never released the lookup")
        return self.inner.resolve_hash(key_hash)


async def _until(condition: object, *, rounds: int = 1000) -> None:
    for _ in range(rounds):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)  # yield to the tasks under test; no timed wait
    raise AssertionError("condition not reached")


async def test_concurrent_misses_share_one_query(store: KeyStore, queries: QueryCounter) -> None:
    key, record = store.create_key("acme")
    gated = GatedStore(store)
    resolver = KeyResolver(gated)
    queries.count = 0

    lookups = asyncio.gather(*(resolver.resolve(key) for _ in range(25)))
    await _until(lambda: resolver.stats.coalesced == 24)
    gated.release.set()
    results = await lookups

    assert results == [record] * 25
    assert gated.calls == 1 and queries.count == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup(store: KeyStore) -> None:
    key, record = store.create_key("acme")
    gated = GatedStore(store)
    resolver = KeyResolver(gated)

    first = asyncio.ensure_future(resolver.resolve(key))
    second = asyncio.ensure_future(resolver.resolve(key))
    await _until(lambda: resolver.stats.coalesced == 1)
    first.cancel()
    gated.release.set()

    assert await second == record
    with pytest.raises(asyncio.CancelledError):
        await first
    assert gated.calls == 1


async def test_store_failures_reach_every_waiter_and_are_not_cached() -> None:
    class Failing:
        calls = 0

        def resolve_hash(self, key_hash: str) -> KeyRecord | None:
            self.calls += 1
            raise StoreError("looking up a key failed on sqlite:///x.db: disk I/O error")

    failing = Failing()
    resolver = KeyResolver(failing)
    outcomes = await asyncio.gather(
        resolver.resolve(UNKNOWN), resolver.resolve(UNKNOWN), return_exceptions=True
    )
    assert all(isinstance(o, StoreError) for o in outcomes)
    with pytest.raises(StoreError):
        await resolver.resolve(UNKNOWN)
    assert failing.calls == 2 and len(resolver) == 0


# --- bounded answers ------------------------------------------------------------------


class StuckStore:
    """A store whose lookups block until released, like a black-holed database."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def resolve_hash(self, key_hash: str) -> KeyRecord | None:
        self.calls += 1
        self.release.wait(timeout=10)
        return None


async def test_a_lookup_the_store_never_answers_fails_with_store_error() -> None:
    stuck = StuckStore()
    resolver = KeyResolver(stuck, lookup_timeout_s=0.05)
    try:
        async with asyncio.timeout(2):  # without the bound this would wait on the store
            with pytest.raises(StoreError, match=r"did not answer within 0\.05s"):
                await resolver.resolve(UNKNOWN)
            # Not cached and not left in flight: the next request asks again.
            with pytest.raises(StoreError):
                await resolver.resolve(UNKNOWN)
    finally:
        # Let the abandoned worker threads finish, or closing the loop waits for them.
        stuck.release.set()
    assert stuck.calls == 2 and len(resolver) == 0


async def test_unknown_keys_never_evict_valid_ones(store: KeyStore, queries: QueryCounter) -> None:
    valid = [store.create_key("acme")[0] for _ in range(3)]
    resolver = KeyResolver(store, max_entries=3, max_negative_entries=5)
    for key in valid:
        await resolver.resolve(key)

    for _ in range(50):  # a flood of well-formed keys nobody issued
        assert await resolver.resolve(generate_key()) is None
    assert len(resolver) == 3 + 5  # each cache held to its own bound

    queries.count = 0
    for key in valid:
        assert await resolver.resolve(key) is not None
    assert queries.count == 0 and resolver.stats.hits == 3


async def test_negative_cache_drops_its_oldest_first(store: KeyStore) -> None:
    resolver = KeyResolver(store, max_negative_entries=2)
    unknown = [generate_key() for _ in range(3)]
    for key in unknown:
        await resolver.resolve(key)
    await resolver.resolve(unknown[2])
    await resolver.resolve(unknown[0])  # evicted first, so a miss again
    assert resolver.stats.hits == 1 and resolver.stats.misses == 4


async def test_a_key_that_becomes_valid_leaves_the_negative_cache(store: KeyStore) -> None:
    clock = Clock(datetime.now(UTC))
    key, record = store.create_key("acme")
    store.revoke(record.id)
    resolver = KeyResolver(store, monotonic=clock.monotonic)
    assert await resolver.resolve(key) is None

    class Reinstated:  # the same hash answering again, as after a restore from backup
        def resolve_hash(self, key_hash: str) -> KeyRecord | None:
            return record

    resolver.store = Reinstated()
    clock.mono += resolver.negative_ttl_s + 0.1
    assert await resolver.resolve(key) == record
    assert len(resolver) == 1  # one entry for one key, not one in each cache


# --- the hot path ---------------------------------------------------------------------


async def test_cache_hits_on_keys_without_expiry_do_not_read_the_clock(store: KeyStore) -> None:
    clock = Clock(datetime.now(UTC))
    key, record = store.create_key("acme")
    resolver = KeyResolver(store, monotonic=clock.monotonic, clock=clock)
    assert await resolver.resolve(key) == record

    reads = clock.calls
    for _ in range(20):
        assert await resolver.resolve(key) == record
    assert clock.calls == reads and resolver.stats.hits == 20
