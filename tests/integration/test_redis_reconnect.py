"""A Redis restart of a few seconds must not freeze paysched's queue clients for much longer.

Regression: bullmq's clients retry a lost Redis with backoff 2, 4, 8, 16, 20 s on one shared
connection, so after a ~3 s restart every command of a worker (lock renewal, completion, the
delay waker) waited until the next retry, ~3 s more here and up to 20 s in general; the chaos
harness (python -m paysched.chaos) measured ~10 s recovery after a 2 s restart.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from paysched.backoff import Backoff
from paysched.queue import PaymentQueue
from tests.conftest import PrivateRedis


async def test_queue_clients_reconnect_within_a_second_of_redis_returning(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(tmp_path / "redis", appendonly=True)
    server.start()
    queue = PaymentQueue(server.url, "payments", "reconnect", 3, Backoff(100, 0, random.Random()))
    processor_calls: list[object] = []

    async def processor(job: object, token: str) -> None:
        processor_calls.append(job)

    worker = await queue.start_worker(processor, 1, 2000)
    try:
        await queue.ping()
        for client in (
            queue.redis,
            worker.backend.connection.conn,
            worker.backend.blocking_connection.conn,
        ):
            retry = client.get_retry()
            assert retry.get_retries() >= 100
            # Never more than 1 s between two tries (bullmq's own policy grows to 20 s), so
            # a client is back within a second of Redis; checked on the policy, not a clock.
            assert max(retry._backoff.compute(n) for n in range(1, 300)) <= 1.0
        server.stop()
        probe = asyncio.create_task(queue.counts())  # issued while Redis is down: retries
        pending, _ = await asyncio.wait({probe}, timeout=1.0)
        assert not pending, "a command answered while Redis was down"
        server.start()  # same port, same AOF
        await asyncio.wait_for(probe, timeout=30)  # it went through once Redis was back
    finally:
        await worker.close(force=True)
        await queue.close()
        server.stop()
