"""The delay waker: it signals a due job whatever markers are pending, and stops promptly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from paysched.app import App
from paysched.queue.waker import DelayWaker
from tests.conftest import wait_for


class SwallowsCancellation:
    """The real client, except that a pipeline swallows a cancellation landing in execute():
    what redis-py did when a cancel met a command timing out or reconnecting (a worker then
    never exited after SIGTERM: stop() awaited the waker forever)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.inside = asyncio.Event()

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._client.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def swallowing_execute() -> Any:
            result = await execute()
            self.inside.set()
            try:
                await asyncio.sleep(3600)  # a command stuck until the cancel lands here
            except asyncio.CancelledError:
                return [[], []]
            return result

        pipe.execute = swallowing_execute
        return pipe


async def test_waker_stops_even_if_its_cancellation_is_swallowed(app: App) -> None:
    assert app.queue is not None
    waker = DelayWaker(app.queue, max_sleep_s=0.2)
    redis = SwallowsCancellation(app.queue.redis)
    waker._redis = redis
    waker.start()
    task = waker._task
    assert task is not None
    await asyncio.wait_for(redis.inside.wait(), timeout=5)
    await asyncio.wait_for(waker.stop(), timeout=5)
    await asyncio.wait({task}, timeout=2)
    assert task.done()


async def test_a_marker_for_later_does_not_hide_a_job_due_now(app: App) -> None:
    """A pending marker scored in the future makes the worker that pops it block until then,
    past a job due now: the waker must still signal (it backed off on any pending marker, and
    start lateness p50 rose from 6 to 25 ms)."""
    assert app.queue is not None
    queue, redis = app.queue, app.queue.redis
    marker = queue._queue.toKey("marker")
    await queue._queue.add("payment", {"occurrence_id": 1}, {"jobId": "due-soon", "delay": 30})
    await redis.delete(marker)
    await redis.zadd(marker, {"1": int(time.time() * 1000) + 60_000})
    waker = DelayWaker(queue, max_sleep_s=0.2)
    waker.start()
    try:

        async def signalled() -> bool:
            return await redis.zscore(marker, "0") is not None

        await wait_for(signalled, timeout=5, what="the waker's marker for the due job")
    finally:
        await waker.stop()


class CountsLooks:
    """The real client; counts the waker's looks at the delayed set (one pipeline each)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.looks = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.looks += 1
        return self._client.pipeline(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_an_idle_waker_blocks_until_a_job_is_added_then_signals_it_on_time(app: App) -> None:
    """Between due times the waker waits on the queue's event stream, not a 50 ms poll (40
    Redis commands a second in an idle process): with nothing delayed it looks once and
    blocks; a job added later wakes it, and it still signals that job when it falls due."""
    assert app.queue is not None
    queue, redis = app.queue, app.queue.redis
    marker = queue._queue.toKey("marker")
    waker = DelayWaker(queue, max_sleep_s=0.2)
    counting = CountsLooks(redis)
    waker._redis = counting
    waker.start()
    try:

        async def blocked() -> bool:
            clients = await redis.client_list()
            return any(
                c.get("name") == f"{queue.prefix}:{queue.name}:delay-waker"
                and c.get("cmd") == "xread"
                and "b" in c.get("flags", "")
                for c in clients
            )

        await wait_for(blocked, timeout=5, what="the waker's blocking read")
        assert counting.looks == 1
        await queue._queue.add("payment", {"occurrence_id": 1}, {"jobId": "later", "delay": 1000})
        await redis.delete(marker)  # BullMQ's own marker for it: only the waker's may count

        async def signalled() -> bool:
            return await redis.zscore(marker, "0") is not None

        await wait_for(signalled, timeout=5, what="the waker's marker for the delayed job")
        # The add woke it, the due time woke it, and it looked again after signalling: a few
        # looks, where polling took one every 50 ms of the job's second of delay.
        assert counting.looks <= 6
    finally:
        await waker.stop()
