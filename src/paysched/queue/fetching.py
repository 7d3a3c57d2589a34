"""BullMQ's Worker, fetching one job at a time (as Node BullMQ does)."""

from __future__ import annotations

import asyncio
from typing import Any

from bullmq import Job, Worker


class SequentialFetchWorker(Worker):  # type: ignore[misc]
    """BullMQ's Worker, fetching one job at a time as Node BullMQ does.

    bullmq 3.4.4's run loop starts one fetch task per free slot at once, and all but the one
    that blocks for the next job call moveToActive together: after every job it fetched, a
    worker with concurrency 50 made ~49 more moveToActive calls that found nothing. That burst
    held the event loop and Redis for ~10 ms, and payments falling due meanwhile started that
    late (bench/lateness.py, 600 payments over 15 s: start lateness p50 21 ms with the burst,
    5 ms without). Node's loop awaits each fetch and stops at the first that finds nothing; a
    lock gives the same here: fetches run in turn, one of them blocking for the next job while
    the others wait their turn.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fetching = asyncio.Lock()
        self._fetcher: asyncio.Task[Any] | None = None

    async def run(self) -> None:
        if self.closing:  # closed before its task first ran: nothing to start
            return
        await super().run()

    async def getNextJob(self, token: str) -> Job | None:
        async with self._fetching:
            if self.closing:  # fetches queued behind the lock end at once on close
                return None
            self._fetcher = asyncio.current_task()
            try:
                job: Job | None = await super().getNextJob(token)
                return job
            except asyncio.CancelledError:
                if self.closing:  # close() ended the blocking wait
                    return None
                raise
            finally:
                self._fetcher = None

    async def close(self, force: bool = False) -> None:
        # bullmq cancels the blocking wait's inner future; redis-py can swallow that (see
        # DelayWaker.stop), and the fetch holding the lock would then block for seconds.
        # Cancelling the fetch itself, only while it blocks (never mid-moveToActive, which
        # would leave a job active with nobody processing it), ends it either way.
        self.closing = True
        fetcher = self._fetcher
        if fetcher is not None and self.waiting is not None:
            fetcher.cancel()
        await super().close(force)
