"""One gateway replica in the cross-process budget race (run by test_limits_redis).

Usage: python limits_race_worker.py URL PREFIX GATE COUNT LIMIT RESERVE EXPIRES
Prints ``ready``, waits for a token on the GATE list (so every process starts
together without sleeping), fires COUNT concurrent admits and prints how many
were admitted.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from keel.limits import Admission, Admitted, BudgetRule, RedisLimits


async def main(
    url: str, prefix: str, gate: str, count: int, limit: int, reserve: int, expires: float
) -> None:
    rule = Admission("acme", budgets=(BudgetRule("budget:race", limit, reserve, "daily", expires),))
    limits = RedisLimits(url, prefix=prefix, timeout_s=10.0)
    waiter = Redis.from_url(url)
    try:
        await limits.used("acme", "budget:race")  # connect and load the scripts before the gate
        print("ready", flush=True)
        await waiter.blpop([gate], timeout=60)
        results = await asyncio.gather(*(limits.admit(rule) for _ in range(count)))
        print(sum(isinstance(r, Admitted) for r in results), flush=True)
    finally:
        await waiter.aclose()
        await limits.aclose()


if __name__ == "__main__":
    url, prefix, gate, count, limit, reserve, expires = sys.argv[1:]
    asyncio.run(main(url, prefix, gate, int(count), int(limit), int(reserve), float(expires)))
