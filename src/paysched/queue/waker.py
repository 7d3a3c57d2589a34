"""The delay waker: blocked workers woken the moment the next delayed job falls due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from paysched.queue.connection import reconnect_promptly
from paysched.redis_client import redis_client

if TYPE_CHECKING:
    from paysched.queue import PaymentQueue


log = logging.getLogger("paysched.queue")
# The delay waker looks at the delayed set at most this often while events stream in, and at
# least every IDLE_LOOK_S without one (a safety net: the events say when to look).
POLL_S = 0.05
IDLE_LOOK_S = 10.0


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class DelayWaker:
    """Wakes blocked workers the moment the next delayed job falls due.

    A BullMQ worker waits for delayed jobs with a blocking pop whose timeout Redis only checks
    on its `hz` timer (10 times a second by default), so delayed jobs start up to ~100 ms late.
    At each delayed job's due time this task adds the queue's wake-up marker, the same signal
    BullMQ itself sends when a job is added, so the worker promotes the job within a millisecond
    or two. Measured by bench/lateness.py.

    Between due times it learns of new jobs (one added meanwhile may be due sooner) from the
    queue's event stream, where every BullMQ script that adds or delays a job writes an event:
    a blocking XREAD on a connection of its own, not a poll. Polling the delayed set every
    50 ms cost an idle process 40 Redis commands a second (bench/measure_idle.py); now it looks
    when an event arrives (at most every POLL_S under load) and every IDLE_LOOK_S otherwise.
    """

    def __init__(self, queue: PaymentQueue, max_sleep_s: float = 1.0) -> None:
        self._redis = queue.redis
        self._redis_url = queue.redis_url
        self._delayed_key = queue._queue.toKey("delayed")
        self._marker_key = queue._queue.toKey("marker")
        self._events_key = queue._queue.toKey("events")
        # Named, so that CLIENT LIST tells its blocked read from the workers'.
        self.client_name = f"{queue.prefix}:{queue.name}:delay-waker"
        self._max_sleep_s = max_sleep_s
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[Any] | None = None  # the blocking XREAD, across turns
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop within a second, whatever the task is doing.

        Cancelling alone is not enough: redis-py can swallow a cancellation that lands while a
        command times out or reconnects, and the loop then ran on while stop() awaited it
        forever (a worker that never exited after SIGTERM). The flag ends the loop at its next
        turn; the wait is bounded either way.
        """
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task}, timeout=self._max_sleep_s + 0.5)
        if not task.done():
            log.warning("delay waker did not stop in time; leaving it")

    async def _run(self) -> None:
        # The blocking read needs a connection of its own: the queue's client has one
        # connection, which the read would hold for seconds.
        # redis-py's default socket timeout (5 s) would cut the blocking read short and
        # reconnect every time: the read's own block, with room for Redis to answer.
        events = redis_client(
            self._redis_url,
            single_connection_client=True,
            client_name=self.client_name,
            socket_timeout=IDLE_LOOK_S + 5,
        )
        reconnect_promptly(events)
        try:
            await self._loop(events)
        finally:
            reading, self._reading = self._reading, None
            if reading is not None:
                reading.cancel()
                await asyncio.wait({reading}, timeout=self._max_sleep_s)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(events.aclose(), self._max_sleep_s)

    async def _xread(self, events: Redis, last_id: str) -> Any:
        """The blocking read of the next event after `last_id`.

        A read cancelled while redis-py waits out its retry backoff ends in redis-py's own
        KeyError (it releases the connection twice), not in CancelledError; at shutdown
        asyncio.run then printed it as an unhandled exception with three tracebacks. Such an
        error, or any once stopping, is the cancellation it stands for."""
        try:
            return await events.xread(
                {self._events_key: last_id}, count=1, block=int(IDLE_LOOK_S * 1000)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._stopping or isinstance(exc.__context__, asyncio.CancelledError):
                raise asyncio.CancelledError() from exc
            raise

    async def _loop(self, events: Redis) -> None:
        # Every delayed job due at or before this (ms) has been signalled: a fetch promotes all
        # due jobs at once, so one signal covers them, and the next one to watch is the first
        # job due after it. (Re-reading the head instead, and backing off while it waited for a
        # busy worker, left the jobs due just after it unsignalled: start lateness p50 ~10 ms.)
        signalled_until = -1
        looked_at = 0.0
        while not self._stopping:
            try:
                pipe = self._redis.pipeline(transaction=False)
                # The newest event first, then the head: a job added after this event id
                # wakes the read below, one added before it is in the head.
                pipe.xrevrange(self._events_key, "+", "-", count=1)
                # BullMQ scores delayed jobs as timestamp * 4096 + a 12-bit counter.
                pipe.zrangebyscore(
                    self._delayed_key,
                    (signalled_until + 1) << 12,
                    "+inf",
                    start=0,
                    num=1,
                    withscores=True,
                )
                pipe.zrange(self._marker_key, 0, 0, withscores=True)
                newest, head, marker = await pipe.execute()
                looked_at = time.monotonic()
                now_ms = time.time() * 1000
                due_ms = int(head[0][1]) >> 12 if head else None
                if due_ms is not None and due_ms <= now_ms:
                    # A marker that asks for a fetch now (score 0 or past) and that no worker
                    # has taken yet: the worker is busy, and its next fetch promotes the job
                    # anyway. A marker for a later time does not count: the worker popping it
                    # would block until then, past this job.
                    if not (marker and int(marker[0][1]) <= now_ms):
                        await self._redis.zadd(self._marker_key, {"0": 0})
                    signalled_until = int(now_ms)
                    continue
                reading = self._reading
                if reading is None or reading.done():
                    last_id = newest[0][0] if newest else "0-0"
                    reading = self._reading = asyncio.ensure_future(self._xread(events, last_id))
                    # A read cut off by stop() (its connection closed under it) ends in an
                    # error nobody awaits: taken here, not logged as "never retrieved".
                    reading.add_done_callback(_retrieved)
                timer = None if due_ms is None else (due_ms - now_ms) / 1000
                done, _ = await asyncio.wait({reading}, timeout=timer)
                if done:
                    reading.result()  # a failed read raises here: wait, then look again
                    # Under load events come in a stream: look at most every POLL_S, and
                    # never past the next due time.
                    pause = POLL_S - (time.monotonic() - looked_at)
                    if timer is not None:
                        pause = min(pause, timer - (time.monotonic() - looked_at))
                    if pause > 0:
                        await asyncio.sleep(pause)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the worker's own timeouts still apply
                log.debug("delay waker: %s", exc)
                await asyncio.sleep(self._max_sleep_s)
