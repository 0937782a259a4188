"""The judge cache on SQLite and PostgreSQL: keys, first write wins, counters, migration."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from keel.errors import InvalidRequest
from keel.store import JudgeCache, JudgeCacheKey, JudgeCacheStats, upgrade
from keel.store.judge_cache import sha256_hex
from keel.store.tables import judge_cache

KEY = JudgeCacheKey("judge", sha256_hex("prompt"), sha256_hex("Paris."), sha256_hex("Paris"))
VERDICT = {"kind": "rubric", "score": 1.0, "raw_score": 5, "pass": True, "reason": "right"}


def test_sha256_hex_is_the_hex_digest_of_utf8() -> None:
    assert sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert len(sha256_hex("é")) == 64


def test_every_part_of_the_key_counts_and_parts_cannot_run_together() -> None:
    keys = {
        KEY.key,
        JudgeCacheKey("judge-2", KEY.judge_prompt_hash, KEY.output_hash, KEY.reference_hash).key,
        JudgeCacheKey("judge", sha256_hex("p2"), KEY.output_hash, KEY.reference_hash).key,
        JudgeCacheKey("judge", KEY.judge_prompt_hash, sha256_hex("Lyon."), KEY.reference_hash).key,
        JudgeCacheKey("judge", KEY.judge_prompt_hash, KEY.output_hash, None).key,
        JudgeCacheKey(
            "judge", KEY.judge_prompt_hash, KEY.output_hash, None, KEY.reference_hash
        ).key,
        JudgeCacheKey("a", "b", "c").key,
        JudgeCacheKey("a", "", "bc").key,
        JudgeCacheKey("ab", "", "c").key,
    }
    assert len(keys) == 9
    assert all(len(k) == 64 for k in keys)
    # The key is a pure function of the parts: stable across processes and runs.
    assert KEY.key == JudgeCacheKey(*_parts(KEY)).key


def _parts(key: JudgeCacheKey) -> tuple[str, str, str, str | None, str | None]:
    return (
        key.judge_alias,
        key.judge_prompt_hash,
        key.output_hash,
        key.reference_hash,
        key.context_hash,
    )


def test_get_put_and_counters(engine: sa.Engine) -> None:
    at = datetime(2025, 3, 1, 12, tzinfo=UTC)
    cache = JudgeCache(engine, clock=lambda: at)

    assert cache.get(KEY) is None
    cache.put(KEY, VERDICT)
    assert cache.get(KEY) == VERDICT
    assert cache.get(KEY) == VERDICT

    assert cache.stats == JudgeCacheStats(hits=2, misses=1, writes=1)
    assert cache.stats.as_dict() == {"hits": 2, "misses": 1, "writes": 1}
    assert cache.count() == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(judge_cache)).mappings().one()
    assert row["key"] == KEY.key
    assert row["judge_alias"] == "judge"
    assert row["output_hash"] == sha256_hex("Paris.")
    assert row["reference_hash"] == sha256_hex("Paris")
    assert row["context_hash"] is None
    assert row["created_at"] == at


def test_a_second_instance_reads_what_the_first_stored(engine: sa.Engine) -> None:
    JudgeCache(engine).put(KEY, VERDICT)
    again = JudgeCache(engine)
    assert again.get(KEY) == VERDICT
    assert again.stats == JudgeCacheStats(hits=1, misses=0, writes=0)


def test_the_first_verdict_under_a_key_wins(engine: sa.Engine) -> None:
    cache = JudgeCache(engine)
    cache.put(KEY, VERDICT)
    cache.put(KEY, {**VERDICT, "pass": False})
    assert cache.get(KEY) == VERDICT
    assert cache.count() == 1


def test_concurrent_writers_of_one_key_both_succeed(engine: sa.Engine) -> None:
    cache = JudgeCache(engine)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: cache.put(KEY, {**VERDICT, "reason": str(i)}), range(16)))
    assert cache.count() == 1
    assert cache.stats.writes == 16


def test_clear_by_alias_or_all(engine: sa.Engine) -> None:
    cache = JudgeCache(engine)
    other = JudgeCacheKey("judge-2", KEY.judge_prompt_hash, KEY.output_hash)
    cache.put(KEY, VERDICT)
    cache.put(other, VERDICT)

    assert cache.clear(judge_alias="judge") == 1
    assert cache.get(KEY) is None
    assert cache.get(other) == VERDICT
    assert cache.clear() == 1
    assert cache.count() == 0


def test_an_alias_too_long_for_its_column_is_a_clear_error(engine: sa.Engine) -> None:
    with pytest.raises(InvalidRequest) as caught:
        JudgeCache(engine).put(JudgeCacheKey("j" * 201, "p", "o"), VERDICT)
    assert caught.value.param == "judge_alias"


def test_migration_0005_downgrades_and_upgrades_again(engine: sa.Engine) -> None:
    from alembic import command
    from alembic.config import Config

    from keel.store import db

    JudgeCache(engine).put(KEY, VERDICT)
    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004_prompt_registry_eval_runs")
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert "judge_cache" not in names
    assert "eval_runs" in names

    upgrade(engine)
    cache = JudgeCache(engine)
    assert cache.get(KEY) is None
    cache.put(KEY, VERDICT)
    assert cache.get(KEY) == VERDICT
