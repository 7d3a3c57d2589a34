"""The delay waker stops promptly even when Redis swallows its cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

from paysched.app import App
from paysched.queue import DelayWaker


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
                return [[], 0]
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
