"""Bounded background work after a response: a queue, a few workers, drain on shutdown.

Work queued here is never on a user's critical path. A full queue refuses new
work at once (the caller counts the drop) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("keel.pipeline")

Job = TypeVar("Job")


class Lane(Generic[Job]):
    def __init__(
        self, handle: Callable[[Job], Awaitable[None]], *, size: int, workers: int
    ) -> None:
        self._handle = handle
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=size)
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(workers)]

    def offer(self, job: Job) -> bool:
        """Queue ``job``; False (and nothing queued) when the lane is full."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            return False
        return True

    async def drain(self) -> None:
        """Finish everything queued, then stop the workers."""
        await self._queue.join()
        for worker in self._workers:
            worker.cancel()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._handle(job)
            except Exception:  # one bad job must never take a worker down
                log.exception("background job failed")
            finally:
                self._queue.task_done()
