"""5. Footprint: worker RSS and Redis bytes per job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from paysched.app import App
from paysched.domain import Occurrence, OccurrenceState, occurrence_key
from paysched.queue import PaymentQueue

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, insert_payments, median, paysched, wait_all_final  # isort: skip
from common import stop_process  # isort: skip


# -- 5. footprint ---------------------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in KiB."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


async def _used_memory(client: Any) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def _key_usage(client: Any, pattern: str) -> tuple[int, int, dict[str, int]]:
    """(keys, MEMORY USAGE bytes summed, keys per kind) of the keys matching the pattern."""
    keys, total = 0, 0
    kinds: dict[str, int] = {}
    async for key in client.scan_iter(match=pattern, count=1000):
        keys += 1
        total += int(await client.memory_usage(key, samples=0) or 0)
        name = key.decode() if isinstance(key, bytes) else str(key)
        tail = name.rsplit(":", 1)[-1]
        kind = "job hash" if tail.startswith("pay-") else tail
        kinds[kind] = kinds.get(kind, 0) + 1
    return keys, total, kinds


async def delayed_job_memory(ctx: Ctx, app: App, n: int) -> dict[str, Any]:
    """Redis bytes per delayed job: INFO used_memory before/after enqueueing n delayed jobs
    through PaymentQueue.enqueue (the scheduler's own call, same job data and options)."""
    assert app.queue is not None
    queue = PaymentQueue(
        ctx.redis_url, f"delayed-{secrets.token_hex(4)}", "paysched-bench", 3, app.backoff
    )
    try:
        client = queue.redis
        now = app.clock.now()
        occs = [
            Occurrence(
                id=i,
                payment_id=i,
                key=occurrence_key(i, 0) + f"{i:07d}",
                due_at=now + timedelta(hours=1, milliseconds=i),
                state=OccurrenceState.SCHEDULED,
                attempts=0,
                fence=0,
                reason=None,
                started_at=None,
                finished_at=None,
            )
            for i in range(1, n + 1)
        ]
        await queue.ping()
        before = await _used_memory(client)
        await queue.enqueue(occs, now)
        after = await _used_memory(client)
        keys, usage, kinds = await _key_usage(client, f"paysched-bench:{queue.name}:*")
        return {
            "jobs": n,
            "used_memory_delta_bytes": after - before,
            "bytes_per_delayed_job": round((after - before) / n),
            "keys": keys,
            "keys_by_kind": kinds,
            "memory_usage_bytes": usage,
            "memory_usage_per_job": round(usage / n),
        }
    finally:
        with contextlib.suppress(Exception):
            await queue.obliterate()
        await queue.close()


async def worker_footprint(ctx: Ctx, kind: str, n: int) -> dict[str, Any]:
    """A real `paysched worker` process (concurrency 50) executes n payments; its RSS idle and
    at its peak (VmHWM), and what the completed jobs leave in Redis."""
    async with paysched(ctx, kind, "footprint", concurrency=3, funds=n) as app:
        assert app.scheduler is not None and app.queue is not None
        client = app.queue.redis
        settings = app.settings
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PAYSCHED_", "REDIS_"))},
            "REDIS_URL": ctx.redis_url,
            "DATABASE_URL": str(app.store.engine.url.render_as_string(hide_password=False)),
            "PAYSCHED_DATA_DIR": str(settings.data_dir),
            "PAYSCHED_EMBEDDED_REDIS": "never",
            "PAYSCHED_QUEUE": settings.queue_name,
            "PAYSCHED_QUEUE_PREFIX": settings.queue_prefix,
            "PAYSCHED_CONCURRENCY": "50",
            "PAYSCHED_LOG_LEVEL": "WARNING",
        }
        before_jobs = await _used_memory(client)
        pattern = f"{settings.queue_prefix}:{settings.queue_name}:*"
        base_keys, base_usage, _ = await _key_usage(client, pattern)
        proc = subprocess.Popen(
            [sys.executable, "-m", "paysched", "worker", "--processes", "1"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(settings.data_dir / "worker.log", "wb"),  # noqa: SIM115
        )
        try:
            # Ready once its connections show up in CLIENT LIST (BullMQ names them).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"paysched worker exited with {proc.returncode}")
                clients = await client.client_list()
                if any(settings.queue_name in str(c.get("name", "")) for c in clients):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            idle = _proc_status(proc.pid)
            due = app.clock.now() - timedelta(milliseconds=1)
            await app.db(insert_payments, app, [due] * n)
            began = time.monotonic()
            await app.scheduler.tick()
            ok = await wait_all_final(app, n, timeout_s=max(120.0, n / 5))
            busy_s = time.monotonic() - began
            await asyncio.sleep(0.5)
            peak = _proc_status(proc.pid)
        finally:
            stop_process(proc)
        after_jobs = await _used_memory(client)
        keys, usage, kinds = await _key_usage(client, pattern)
        counts = await app.queue.counts()
        return {
            "database": kind,
            "payments": n,
            "concurrency": 50,
            "complete": ok,
            "busy_s": round(busy_s, 2),
            "worker_rss_idle_mib": round(idle.get("VmRSS", 0) / 1024, 1),
            "worker_rss_peak_mib": round(peak.get("VmHWM", 0) / 1024, 1),
            "completed_in_redis": counts["completed"],
            "keep_completed": settings.keep_completed,
            "used_memory_delta_bytes": after_jobs - before_jobs,
            "bytes_per_completed_job": round((after_jobs - before_jobs) / n),
            "keys_before": base_keys,
            "keys_after": keys,
            "keys_by_kind": kinds,
            "keys_per_completed_job": round((keys - base_keys) / n, 2),
            "memory_usage_per_completed_job": round((usage - base_usage) / n),
        }


async def bench_footprint(ctx: Ctx) -> dict[str, Any]:
    kind = "postgresql" if "postgresql" in ctx.databases else ctx.databases[0]
    runs = []
    for number in range(1, ctx.runs + 1):
        async with paysched(ctx, "sqlite", "footprint-delayed", concurrency=3) as app:
            delayed = await delayed_job_memory(ctx, app, ctx.sizes.footprint_delayed)
        worker = await worker_footprint(ctx, kind, ctx.sizes.footprint_worker_payments)
        print(
            f"  footprint run {number}: worker RSS idle {worker['worker_rss_idle_mib']} MiB, "
            f"peak {worker['worker_rss_peak_mib']} MiB; {delayed['bytes_per_delayed_job']} B "
            f"per delayed job; {worker['bytes_per_completed_job']} B and "
            f"{worker['keys_per_completed_job']} keys per completed job",
            flush=True,
        )
        runs.append({"delayed": delayed, "worker": worker})
    return {
        "database": kind,
        "runs": runs,
        "median_worker_rss_idle_mib": median([r["worker"]["worker_rss_idle_mib"] for r in runs]),
        "median_worker_rss_peak_mib": median([r["worker"]["worker_rss_peak_mib"] for r in runs]),
        "median_bytes_per_delayed_job": median(
            [r["delayed"]["bytes_per_delayed_job"] for r in runs]
        ),
        "median_bytes_per_completed_job": median(
            [r["worker"]["bytes_per_completed_job"] for r in runs]
        ),
        "median_keys_per_completed_job": median(
            [r["worker"]["keys_per_completed_job"] for r in runs]
        ),
        "complete": all(r["worker"]["complete"] for r in runs),
    }
