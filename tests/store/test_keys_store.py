"""Virtual keys end to end on SQLite and PostgreSQL: store, resolver cache, migrations, CLI."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import event

from keel.cli.keys import keys
from keel.errors import ConfigError, InvalidRequest, NotFound, StoreError
from keel.store import KeyRecord, KeyResolver, KeyStore, hash_key, make_engine, redact_url, upgrade
from keel.store.tables import api_keys, metadata, tenants

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
UNKNOWN = "sk-keel-" + "A" * 43  # well formed, never issued


class Clock:
    """A hand-moved clock, for expiry and cache TTLs without sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono


# --- the store ------------------------------------------------------------------


def test_create_then_resolve(store: KeyStore) -> None:
    key, record = store.create_key("acme", tier="gold", name="ci")

    assert key.startswith("sk-keel-") and len(key) == 8 + 43
    assert record.tenant == "acme" and record.tier == "gold" and record.name == "ci"
    assert record.key_prefix == key[:12]
    assert record.created_at.tzinfo is not None
    assert record.expires_at is None and record.revoked_at is None
    assert store.resolve(key) == record


def test_keys_are_unique_and_tenants_shared(store: KeyStore, engine: sa.Engine) -> None:
    first, a = store.create_key("acme")
    second, b = store.create_key("acme")

    assert first != second and a.id != b.id
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tenants)).scalar() == 1


def test_key_without_tier_inherits_its_tenants(store: KeyStore, engine: sa.Engine) -> None:
    key, _ = store.create_key("acme")
    with engine.begin() as conn:
        conn.execute(sa.update(tenants).values(tier="silver"))

    resolved = store.resolve(key)
    assert resolved is not None and resolved.tier == "silver"


@pytest.mark.parametrize("wrong", [UNKNOWN, "", "sk-keel-short", "Bearer x", "sk-proj-" + "A" * 43])
def test_wrong_key_resolves_to_none(store: KeyStore, wrong: str) -> None:
    key, _ = store.create_key("acme")
    assert store.resolve(wrong) is None
    assert store.resolve(key[:-1] + ("B" if key[-1] != "B" else "C")) is None


def test_revoked_key_resolves_to_none(store: KeyStore) -> None:
    key, record = store.create_key("acme")
    revoked = store.revoke(record.key_prefix)

    assert revoked.id == record.id and revoked.revoked_at is not None
    assert store.resolve(key) is None
    # Revoking again changes nothing, including when it happened.
    assert store.revoke(str(record.id)) == revoked


def test_revoke_by_id_or_full_key(store: KeyStore) -> None:
    key, by_key = store.create_key("acme")
    _, by_id = store.create_key("acme")

    assert store.revoke(key).id == by_key.id
    assert store.revoke(by_id.id).id == by_id.id
    assert all(r.revoked_at is not None for r in store.list_keys())


def test_revoke_unknown_or_ambiguous_is_a_caller_error(store: KeyStore, engine: sa.Engine) -> None:
    _, a = store.create_key("acme")
    _, b = store.create_key("acme")
    with engine.begin() as conn:
        conn.execute(
            sa.update(api_keys).where(api_keys.c.id == b.id).values(key_prefix=a.key_prefix)
        )

    with pytest.raises(NotFound):
        store.revoke("sk-keel-zzzz")
    with pytest.raises(NotFound):
        store.revoke("999999")
    with pytest.raises(InvalidRequest, match="several keys"):
        store.revoke(a.key_prefix)
    with pytest.raises(InvalidRequest):
        store.revoke("not-a-key")
    assert all(r.revoked_at is None for r in store.list_keys())


def test_expired_key_resolves_to_none(engine: sa.Engine) -> None:
    clock = Clock()
    store = KeyStore(engine, clock=clock)
    key, record = store.create_key("acme", expires_at=T0 + timedelta(hours=1))
    assert record.expires_at == T0 + timedelta(hours=1)

    clock.now = T0 + timedelta(minutes=59)
    assert store.resolve(key) == record
    clock.now = T0 + timedelta(hours=1)
    assert store.resolve(key) is None
    assert record.status_at(clock.now) == "expired"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tenant": "a b"}, "tenant"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "acme", "tier": "x" * 65}, "tier"),
        ({"tenant": "acme", "expires_at": datetime(2031, 1, 1)}, "expires_at"),
        ({"tenant": "acme", "expires_at": T0 - timedelta(seconds=1)}, "expires_at"),
    ],
)
def test_create_key_rejects_bad_input(
    engine: sa.Engine, kwargs: dict[str, object], param: str
) -> None:
    store = KeyStore(engine, clock=Clock())
    kwargs = dict(kwargs)  # the parameter is shared by both backends' runs
    tenant = kwargs.pop("tenant")
    assert isinstance(tenant, str)
    with pytest.raises(InvalidRequest) as caught:
        store.create_key(tenant, **kwargs)  # type: ignore[arg-type]
    assert caught.value.param == param
    assert store.list_keys() == []


def test_list_keys_filters_by_tenant(store: KeyStore) -> None:
    _, a1 = store.create_key("acme", name="one")
    _, b1 = store.create_key("beta")
    _, a2 = store.create_key("acme", name="two")

    assert [r.id for r in store.list_keys()] == [a1.id, b1.id, a2.id]
    assert [r.name for r in store.list_keys("acme")] == ["one", "two"]
    assert store.list_keys("nobody") == []


def test_only_the_hash_is_stored(store: KeyStore, engine: sa.Engine) -> None:
    key, _ = store.create_key("acme", name="ci")
    secret_part = key.removeprefix("sk-keel-")

    with engine.connect() as conn:
        dump = " ".join(
            repr(tuple(row))
            for table in [*metadata.sorted_tables, sa.table("alembic_version")]
            for row in conn.execute(sa.text(f"SELECT * FROM {table.name}"))
        )
    assert hash_key(key) in dump
    assert key not in dump
    # No long stretch of the secret either (the 4-character display prefix is allowed).
    assert not any(secret_part[i : i + 8] in dump for i in range(4, len(secret_part) - 7))


def test_concurrent_first_keys_for_a_new_tenant(store: KeyStore, engine: sa.Engine) -> None:
    results: list[KeyRecord] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def create() -> None:
        try:
            start.wait(timeout=10)
            results.append(store.create_key("newco")[1])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == [] and len(results) == 6
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tenants)).scalar() == 1


# --- migrations and engines -------------------------------------------------------


def test_upgrade_is_idempotent(engine: sa.Engine, store: KeyStore) -> None:
    key, record = store.create_key("acme")

    upgrade(engine)
    upgrade(engine)

    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert versions == [("0001_tenants_and_keys",)]
    assert store.resolve(key) == record


def test_schema_head_constant_matches_the_migration_scripts() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from keel.store import db

    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == db.SCHEMA_HEAD


def test_a_database_from_a_newer_keel_is_refused(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    with pytest.raises(StoreError, match="0099_from_the_future"):
        upgrade(engine)


def test_migrations_build_exactly_the_tables(engine: sa.Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_sqlite_file_gets_its_folder_and_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = make_engine("sqlite:///nested/dir/keel.db")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        assert (tmp_path / "nested" / "dir" / "keel.db").exists()
    finally:
        engine.dispose()


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    engine = make_engine("postgresql://keel:pw@127.0.0.1/keel")
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_unsupported_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported scheme 'mysql'"):
        make_engine("mysql://root:hunter2@127.0.0.1/keel")
    with pytest.raises(ConfigError, match="cannot parse"):
        make_engine("not a url")


def test_redact_url_hides_the_password() -> None:
    redacted = redact_url("postgresql://keel:hunter2@db.internal:5432/keel")
    assert "hunter2" not in redacted and "keel:***@db.internal" in redacted
    assert redact_url("sqlite:///keel.db") == "sqlite:///keel.db"


def test_unreachable_database_raises_store_error_without_the_password() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    engine = make_engine("postgresql://keel:hunter2@127.0.0.1:1/keel?connect_timeout=2")
    try:
        with pytest.raises(StoreError) as caught:
            upgrade(engine)
        assert caught.value.code == "store_unavailable"
        assert "hunter2" not in caught.value.message and "127.0.0.1:1" in caught.value.message
        with pytest.raises(StoreError):
            KeyStore(engine).resolve(UNKNOWN)
    finally:
        engine.dispose()


class QueryCounter:
    """Counts statements sent to the database through one engine."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_args: object) -> None:
        self.count += 1


@pytest.fixture
def queries(engine: sa.Engine) -> Iterator[QueryCounter]:
    counter = QueryCounter()
    event.listen(engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", counter)


# --- the resolver -------------------------------------------------------------------


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


# --- the CLI ----------------------------------------------------------------------------


@pytest.fixture
def keel_yaml(tmp_path: Path, db_url: str) -> str:
    path = tmp_path / "keel.yaml"
    path.write_text(
        json.dumps(
            {
                "database_url": db_url,
                "providers": {"sim": {"kind": "simulator"}},
                "models": [
                    {"alias": "fast", "deployments": [{"provider": "sim", "model": "sim-fast"}]}
                ],
            }
        ),
        encoding="utf-8",
    )
    return str(path)


def _check_store(db_url: str) -> tuple[sa.Engine, KeyStore]:
    engine = make_engine(db_url)
    return engine, KeyStore(engine)


def test_cli_create_list_revoke(keel_yaml: str, db_url: str) -> None:
    runner = CliRunner()
    made = runner.invoke(
        keys,
        [
            "create",
            "--tenant",
            "acme",
            "--tier",
            "gold",
            "--name",
            "ci",
            "--expires-in",
            "30d",
            "--format",
            "json",
            "-c",
            keel_yaml,
        ],
    )
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    key = created["key"]
    assert created["tenant"] == "acme" and created["key_prefix"] == key[:12]
    assert "cannot be shown again" in made.stderr

    engine, store = _check_store(db_url)
    try:
        resolved = store.resolve(key)
        assert resolved is not None and resolved.tier == "gold"
        assert resolved.expires_at is not None
        assert timedelta(days=29) < resolved.expires_at - resolved.created_at <= timedelta(days=30)

        listed = runner.invoke(keys, ["list", "-c", keel_yaml])
        assert listed.exit_code == 0, listed.output
        assert key[:12] in listed.stdout and "active" in listed.stdout
        assert key not in listed.stdout and hash_key(key) not in listed.stdout

        revoked = runner.invoke(keys, ["revoke", key[:12], "-c", keel_yaml])
        assert revoked.exit_code == 0, revoked.output
        assert "revoked" in revoked.stdout and key not in revoked.stdout
        assert store.resolve(key) is None

        as_json = runner.invoke(
            keys, ["list", "--tenant", "acme", "--format", "json", "-c", keel_yaml]
        )
        [row] = json.loads(as_json.stdout)
        assert row["revoked_at"] is not None and "key" not in row
    finally:
        engine.dispose()


def test_cli_create_prints_the_key_once_in_a_panel(keel_yaml: str) -> None:
    result = CliRunner().invoke(keys, ["create", "--tenant", "acme", "-c", keel_yaml])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("sk-keel-") == 1
    assert "cannot be shown again" in result.stdout


@pytest.mark.parametrize("bad", ["abc", "30", "0d", "-1d", "1y", "99999999999w"])
def test_cli_bad_expires_in_is_one_line_and_exit_2(keel_yaml: str, db_url: str, bad: str) -> None:
    result = CliRunner().invoke(
        keys, ["create", "--tenant", "acme", "--expires-in", bad, "-c", keel_yaml]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--expires-in" in lines[0] and "30d" in lines[0]
    engine, store = _check_store(db_url)
    try:
        upgrade(engine)
        assert store.list_keys() == []
    finally:
        engine.dispose()


def test_cli_revoke_unknown_key_exits_2(keel_yaml: str) -> None:
    result = CliRunner().invoke(keys, ["revoke", "sk-keel-none", "-c", keel_yaml])
    assert result.exit_code == 2
    assert result.stderr.strip() == "keel: error: no key matches 'sk-keel-none'"
