"""Virtual keys end to end on SQLite and PostgreSQL: store, migrations, errors, CLI."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from keystore_support import T0, UNKNOWN, Clock
from sqlalchemy import event

from keel.cli.keys import keys
from keel.errors import ConfigError, InvalidRequest, NotFound, StoreError
from keel.store import (
    KeyRecord,
    KeyStore,
    db,
    generate_key,
    hash_key,
    make_engine,
    redact_url,
    upgrade,
)
from keel.store.keys import DISPLAY_CHARS
from keel.store.tables import api_keys, metadata, tenants

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
    assert versions == [(db.SCHEMA_HEAD,)]
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


def test_a_pool_checkout_timeout_is_a_store_error(tmp_path: Path) -> None:
    # One connection and no overflow: while the test holds it, every other
    # checkout times out with sqlalchemy.exc.TimeoutError, not a DBAPIError.
    engine = sa.create_engine(
        f"sqlite:///{tmp_path / 'keel.db'}", pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    upgrade(engine)
    try:
        with engine.connect(), pytest.raises(StoreError) as caught:
            KeyStore(engine).resolve(UNKNOWN)
        assert caught.value.code == "store_unavailable"
        assert "looking up a key failed" in caught.value.message
        assert "QueuePool limit" in caught.value.message
    finally:
        engine.dispose()


def test_postgres_engines_bound_the_connect_time() -> None:
    def connect_args(url: str) -> dict[str, object]:
        engine = make_engine(url)
        seen: dict[str, object] = {}

        @event.listens_for(engine, "do_connect")
        def capture(
            _dialect: object, _record: object, _args: object, kwargs: dict[str, object]
        ) -> None:
            seen.update(kwargs)

        try:
            with pytest.raises(StoreError):  # nothing listens on port 1
                upgrade(engine)
        finally:
            engine.dispose()
        return seen

    assert connect_args("postgresql://keel@127.0.0.1:1/keel")["connect_timeout"] == 5
    # A timeout the operator put in the URL wins.
    explicit = connect_args("postgresql://keel@127.0.0.1:1/keel?connect_timeout=3")
    assert explicit["connect_timeout"] == "3"


def test_a_black_holed_postgres_fails_in_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket that accepts connections (the kernel's backlog does) and never
    # answers: without a connect timeout, psycopg would wait for ever.
    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT_S", 1)  # libpq rounds it up to 2 s
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = make_engine(f"postgresql://keel:hunter2@127.0.0.1:{port}/keel")
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(1) as pool:
                attempt = pool.submit(upgrade, engine)
                try:
                    with pytest.raises(StoreError, match="timeout"):
                        attempt.result(timeout=10)
                finally:
                    silent.close()  # resets the pending connection if the attempt hangs
        finally:
            engine.dispose()
    assert time.monotonic() - started < 8


def test_store_errors_keep_the_detail_for_operators_not_clients(db_url: str) -> None:
    engine = make_engine(db_url)  # never migrated: the table is missing
    try:
        with pytest.raises(StoreError) as caught:
            KeyStore(engine).resolve(UNKNOWN)
    finally:
        engine.dispose()
    error = caught.value
    assert "api_keys" in error.message and "looking up a key failed" in error.message
    assert error.body()["error"]["message"] == StoreError.CLIENT_MESSAGE
    assert error.body()["error"]["code"] == "store_unavailable"
    body = json.dumps(error.body())
    assert "api_keys" not in body and str(engine.url.database) not in body


# --- the CLI ----------------------------------------------------------------------------


def _write_config(folder: Path, db_url: str) -> str:
    path = folder / "keel.yaml"
    path.write_text(
        json.dumps(
            {
                "database_url": db_url,
                "providers": {"sim": {"kind": "simulator"}},
                "models": [
                    {"alias": "fast", "deployments": [{"provider": "sim", "model": "sim-fast"}]}
                ],
                "tiers": {"gold": {}},  # `keel keys create --tier` accepts only these
            }
        ),
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture
def keel_yaml(tmp_path: Path, db_url: str) -> str:
    return _write_config(tmp_path, db_url)


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


def test_cli_store_errors_print_the_detail(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "postgresql://keel:hunter2@127.0.0.1:1/keel")
    result = CliRunner().invoke(keys, ["list", "-c", config])
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.stderr and "keel:***@" in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    "secret",
    [
        generate_key(),  # well formed but unknown: NotFound
        generate_key() + "!",  # malformed: InvalidRequest
        "sk-proj-" + generate_key()[8:],  # someone else's secret pasted by mistake
    ],
)
def test_cli_revoke_never_echoes_more_than_the_prefix(keel_yaml: str, secret: str) -> None:
    result = CliRunner().invoke(keys, ["revoke", secret, "-c", keel_yaml])
    assert result.exit_code == 2
    shown = result.stdout + result.stderr
    assert secret[:DISPLAY_CHARS] in shown
    assert secret[: DISPLAY_CHARS + 1] not in shown and secret[DISPLAY_CHARS:] not in shown
