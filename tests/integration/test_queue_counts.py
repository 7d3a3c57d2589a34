"""`paysched stats` counts the queue without bullmq (paysched.queue_counts): the numbers must
be those of BullMQ's own Queue.getJobCounts, through PaymentQueue.counts, state by state."""

from __future__ import annotations

import random
from datetime import timedelta

from redis import asyncio as aioredis

from paysched.backoff import Backoff
from paysched.clock import SystemClock
from paysched.domain import Occurrence, OccurrenceState, occurrence_key
from paysched.queue import PaymentQueue
from paysched.queue_counts import QUEUE_STATES, queue_counts


def _occurrence(i: int, due_in: timedelta) -> Occurrence:
    due = SystemClock().now() + due_in
    return Occurrence(
        id=i,
        payment_id=i,
        key=occurrence_key(i, i),
        due_at=due,
        state=OccurrenceState.SCHEDULED,
        attempts=0,
        fence=0,
        reason=None,
        started_at=None,
        finished_at=None,
    )


async def test_counts_match_bullmq_state_by_state(shared_redis_url: str, redis_prefix: str) -> None:
    queue = PaymentQueue(
        shared_redis_url, "counts", redis_prefix, 3, Backoff(100, 0.0, random.Random(1))
    )
    client = aioredis.Redis.from_url(shared_redis_url)
    try:
        now = SystemClock().now()
        empty = await queue_counts(client, "counts", redis_prefix)
        assert empty == await queue.counts() == dict.fromkeys([*QUEUE_STATES, "total"], 0)
        # Delayed (due later) and prioritized (due now) jobs, as the scheduler enqueues them,
        # one plain waiting job, and finished ones in the sets a worker moves them to.
        await queue.enqueue([_occurrence(i, timedelta(hours=1)) for i in range(1, 4)], now)
        await queue.enqueue([_occurrence(i, -timedelta(seconds=1)) for i in range(4, 6)], now)
        await queue._queue.add("plain", {}, {"jobId": "plain-1"})
        await client.zadd(f"{redis_prefix}:counts:completed", {"c1": 1, "c2": 2})
        await client.zadd(f"{redis_prefix}:counts:failed", {"f1": 1})
        counts = await queue_counts(client, "counts", redis_prefix)
        assert counts == await queue.counts()
        assert (counts["delayed"], counts["prioritized"], counts["waiting"]) == (3, 2, 1)
        assert (counts["completed"], counts["failed"], counts["total"]) == (2, 1, 9)
        await queue._queue.pause()  # however this bullmq keeps a paused queue: the same
        assert await queue_counts(client, "counts", redis_prefix) == await queue.counts()
    finally:
        await client.aclose()
        await queue.obliterate()
        await queue.close()
