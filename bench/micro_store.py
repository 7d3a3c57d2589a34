#!/usr/bin/env python3
"""The store's part of a payment alone: CPU and wall ms per payment of claim_many, then
settle_many (half of each batch) and finish_many (the other half), in batches of a given size.

    python bench/micro_store.py postgresql 2000 50
    python bench/micro_store.py sqlite 2000 10

n payments due now on a fresh database (and a private redis-server for the tick), claimed and
settled/finished straight through the store in one thread: no queue, no event loop. Twice,
one line each. Less noisy than a whole run on a shared machine, and it tells the per-batch cost
(small batches) from the per-row cost (large ones).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import QUICK, Ctx, insert_payments, paysched  # isort: skip
from common import DEFAULT_PG_ADMIN_URL, PrivateRedis  # isort: skip

from paysched.db.store import Claim, Finish
from paysched.domain import OccurrenceState


async def one(ctx: Ctx, kind: str, n: int, batch: int) -> tuple[float, float]:
    async with paysched(ctx, kind, "micro", concurrency=10, funds=n) as app:
        assert app.scheduler is not None
        await app.db(insert_payments, app, [app.clock.now() - timedelta(milliseconds=1)] * n)
        await app.scheduler.tick()
        ids = [o.id for o in await app.db(app.store.reads.all_occurrences)]
        store, now = app.store, app.clock.now
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for start in range(0, n, batch):
            got = store.execution.claim_many([(i, None) for i in ids[start : start + batch]], now())
            claims = [c for c in got if isinstance(c, Claim)]
            half = len(claims) // 2
            store.execution.settle_many(claims[:half], now())
            store.execution.finish_many(
                [Finish(c, OccurrenceState.SUCCEEDED, None) for c in claims[half:]], now()
            )
        return (time.process_time() - cpu0) / n * 1000, (time.perf_counter() - wall0) / n * 1000


def main() -> int:
    kind, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tmp = Path(tempfile.mkdtemp(prefix="paysched-micro-"))
    private = PrivateRedis(tmp / "redis")
    try:
        ctx = Ctx(
            redis_url=private.start(),
            tmp=tmp,
            pg_admin_url=DEFAULT_PG_ADMIN_URL,
            databases=(kind,),
            runs=1,
            burst_runs=1,
            scale_runs=1,
            sizes=QUICK,
            quick=True,
        )

        async def runs() -> None:
            for _ in range(2):
                cpu, wall = await one(ctx, kind, n, batch)
                print(
                    f"{kind} batch {batch}: cpu {cpu:.3f} ms/payment, wall {wall:.3f} ms/payment",
                    flush=True,
                )

        asyncio.run(runs())
    finally:
        private.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
