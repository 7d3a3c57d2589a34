"""6. Overhead against bare BullMQ in the same run."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

from bullmq import Job, Queue, Worker

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, median  # isort: skip
from measure_throughput import throughput_run  # isort: skip


# -- 6. overhead vs bare BullMQ -------------------------------------------------------------------


async def bare_bullmq_run(ctx: Ctx, n: int, concurrency: int = 50) -> dict[str, Any]:
    """n no-op jobs (the same job data shape and retention options as paysched's), added before
    the worker starts; jobs/s from worker.run() until the n-th 'completed' event."""
    name, prefix = f"bare-{secrets.token_hex(4)}", "paysched-bench"
    queue = Queue(name, {"connection": ctx.redis_url, "prefix": prefix})
    worker: Worker | None = None
    task: asyncio.Task[Any] | None = None
    try:
        jobs = [
            {
                "name": "payment",
                "data": {"occurrence_id": i, "payment_id": i, "due_at_ms": 0},
                "opts": {
                    "jobId": f"bare-{i}",
                    "attempts": 3,
                    "removeOnComplete": {"age": 86_400, "count": 10_000},
                    "removeOnFail": {"age": 7 * 86_400},
                },
            }
            for i in range(1, n + 1)
        ]
        for start in range(0, n, 500):
            await queue.addBulk(jobs[start : start + 500])
        done = asyncio.Event()
        count = 0

        async def processor(job: Job, token: str) -> None:
            return None

        def on_completed(*_: Any) -> None:
            nonlocal count
            count += 1
            if count >= n:
                done.set()

        opts = {
            "connection": ctx.redis_url,
            "prefix": prefix,
            "concurrency": concurrency,
            "autorun": False,
        }
        worker = Worker(name, processor, opts)
        worker.on("completed", on_completed)
        blocking = worker.backend.blocking_connection
        if blocking is not None:
            await blocking.getRedisVersion()  # the same fix paysched applies
        began = time.monotonic()
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(done.wait(), timeout=max(60.0, n / 20))
            ok = True
        except TimeoutError:
            ok = False
        elapsed = time.monotonic() - began
        return {
            "jobs": n,
            "concurrency": concurrency,
            "complete": ok,
            "seconds": round(elapsed, 3),
            "jobs_per_s": round(n / elapsed, 1) if ok else None,
        }
    finally:
        if worker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.close(), 30)
        if task is not None:
            try:
                await asyncio.wait_for(task, 10)
            except (Exception, asyncio.CancelledError):
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(queue.obliterate(force=True), 60)
        await queue.close()


async def bench_overhead(ctx: Ctx) -> dict[str, Any]:
    n = ctx.sizes.overhead_jobs
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        runs: list[dict[str, Any]] = []
        for number in range(1, ctx.runs + 1):
            bare = await bare_bullmq_run(ctx, n)
            ours = await throughput_run(ctx, kind, 50, "noop", n, tag="noop")
            ratio = (
                round(ours["payments_per_s"] / bare["jobs_per_s"], 3)
                if ours["payments_per_s"] and bare["jobs_per_s"]
                else None
            )
            print(
                f"  overhead {kind} run {number}: bare BullMQ {bare['jobs_per_s']} jobs/s, "
                f"paysched no-op {ours['payments_per_s']} payments/s, ratio {ratio}",
                flush=True,
            )
            runs.append({"bare_bullmq": bare, "paysched_noop": ours, "ratio": ratio})
        out[kind] = {
            "jobs": n,
            "concurrency": 50,
            "runs": runs,
            "median_bare_jobs_per_s": median([r["bare_bullmq"]["jobs_per_s"] for r in runs]),
            "median_noop_payments_per_s": median(
                [r["paysched_noop"]["payments_per_s"] for r in runs]
            ),
            "median_ratio": median([r["ratio"] for r in runs]),
            "complete": all(r["ratio"] is not None for r in runs),
        }
    return out
