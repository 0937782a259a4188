"""How fast the request store takes telemetry batches: rows/s through ``write_batch``.

Writes N synthetic ``RequestRecord``s (default 50,000) in batches of 500,
all kept (the worst case: every record becomes a row *and* a rollup
increment), into a fresh SQLite file and, with ``--postgres-url``, into a
fresh schema on that server (dropped afterwards). Records are built before
the clock starts, so only the store is timed. The goal is at least 5,000
rows/s into SQLite: the telemetry writer must keep up with the gateway.

    .venv/bin/python bench/store_writer.py [-n 50000] [--batch 500] [--keep 1.0] [--repeat 3]
        [--users 500] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from keel.store import RequestStore, make_engine, upgrade
from keel.store.tables import requests, spend_daily
from keel.telemetry.record import AttemptRecord, RequestRecord, StageRecord, Usage

GOAL_ROWS_PER_S = 5000
_MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku")]


def synthetic(n: int, seed: int = 1, *, users: int = 500) -> list[RequestRecord]:
    """``n`` plausible requests over one day from ``users`` end users of 20 tenants.

    As in real traffic, a user belongs to one tenant and sits in one sticky
    experiment arm (variant and prompt version), and an alias is mostly served
    by one model; so a day has a few thousand rollup keys, not one per request.
    Raise ``users`` towards ``n`` for the worst case: every request its own key.
    """
    rng = random.Random(seed)
    start = time.time() - 86_400
    records = []
    for i in range(n):
        user = rng.randrange(users)
        arm = user % 2
        provider, model = _MODELS[0] if rng.random() < 0.9 else rng.choice(_MODELS[1:])
        failed = rng.random() < 0.03
        latency = rng.lognormvariate(6, 0.5)
        records.append(
            RequestRecord(
                request_id=f"req-{uuid.uuid4().hex}",
                trace_id=uuid.uuid4().hex,
                span_id=uuid.uuid4().hex[:16],
                parent_span_id=None,
                started_at=start + i * 86_400 / n,
                operation="chat",
                stream=rng.random() < 0.5,
                http_status=502 if failed else 200,
                status="error" if failed else "ok",
                error_type="provider_all_upstreams_failed" if failed else None,
                tenant=f"tenant-{user % 20}",
                key_id=user % 100,
                end_user=f"user-{user}",
                feature=rng.choice(["chat", "search", "summarize", None]),
                metadata={"team": "bench"},
                alias="fast",
                served_alias="fast",
                deployment=f"{provider}/{model}",
                provider=provider,
                provider_model=model,
                response_model=model,
                finish_reasons=() if failed else ("stop",),
                usage=Usage(input_tokens=rng.randrange(50, 2000), output_tokens=rng.randrange(300)),
                cost_usd=None if rng.random() < 0.01 else rng.random() / 1000,
                latency_ms=latency,
                ttft_ms=latency / 3,
                attempts=(
                    AttemptRecord(
                        alias="fast",
                        deployment=f"{provider}/{model}",
                        provider=provider,
                        provider_model=model,
                        outcome="ok",
                        status=200,
                        start_ms=1.0,
                        duration_ms=latency - 2,
                    ),
                ),
                stages=(StageRecord(name="route", start_ms=0.5, duration_ms=latency - 1),),
                prompt_name="support",
                prompt_version=("1.0.0", "1.1.0")[arm],
                prompt_hash="sha256:" + "ab" * 8,
                variant=("a", "b")[arm],
            )
        )
    return records


@dataclass
class Result:
    name: str
    records: int
    rows: int
    rollup_rows: int
    seconds: float  # wall clock, the best of the repeats
    cpu_seconds: float  # this process's CPU time in that run: steadier on a busy machine

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_seconds / self.records * 1e6


def run(
    name: str, engine: sa.Engine, records: list[RequestRecord], batch: int, keep: float
) -> Result:
    upgrade(engine)
    store = RequestStore(engine)
    rng = random.Random(2)
    flags = [rng.random() < keep for _ in records]
    began, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(records), batch):
        store.write_batch(records[i : i + batch], flags[i : i + batch])
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(requests)).scalar_one()
        rollups = conn.execute(sa.select(sa.func.count()).select_from(spend_daily)).scalar_one()
    return Result(name, len(records), rows, rollups, seconds, cpu)


def postgres(url: str, records: list[RequestRecord], batch: int, keep: float) -> Result:
    # A schema of our own, selected through search_path, so nothing else is touched.
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    owner = make_engine(url)
    with owner.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = make_engine(scoped.render_as_string(hide_password=False))
    try:
        return run("postgresql", engine, records, batch, keep)
    finally:
        engine.dispose()
        with owner.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        owner.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--keep", type=float, default=1.0, help="share of records stored as rows")
    parser.add_argument("--repeat", type=int, default=3, help="SQLite runs; the best is shown")
    parser.add_argument("--users", type=int, default=500, help="distinct end users (rollup keys)")
    parser.add_argument("--postgres-url", help="also measure PostgreSQL (a temporary schema)")
    args = parser.parse_args()

    print(f"building {args.records:,} synthetic records ...")
    records = synthetic(args.records, users=args.users)
    runs = []
    for _ in range(args.repeat):
        # A fresh file each time: the machine is shared, so keep the best run.
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            try:
                runs.append(run("sqlite", engine, records, args.batch, args.keep))
            finally:
                engine.dispose()
    results = [min(runs, key=lambda r: r.seconds)]
    if args.postgres_url:
        results.append(postgres(args.postgres_url, records, args.batch, args.keep))

    print(
        f"{'database':<12}{'records':>10}{'rows':>10}{'rollups':>10}"
        f"{'seconds':>10}{'rows/s':>10}{'cpu us/rec':>12}"
    )
    for r in results:
        print(
            f"{r.name:<12}{r.records:>10,}{r.rows:>10,}{r.rollup_rows:>10,}"
            f"{r.seconds:>10.2f}{r.rate:>10,.0f}{r.cpu_us_per_record:>12.0f}"
        )
    print("sqlite runs (rows/s): " + ", ".join(f"{r.rate:,.0f}" for r in runs))
    sqlite = results[0]
    verdict = "meets" if sqlite.rate >= GOAL_ROWS_PER_S else "MISSES"
    print(f"sqlite {verdict} the goal of {GOAL_ROWS_PER_S:,} rows/s")


if __name__ == "__main__":
    main()
