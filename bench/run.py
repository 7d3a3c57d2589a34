#!/usr/bin/env python3
"""paysched's benchmark suite: one command, every measurement, medians of repeated runs.

    python bench/run.py                  # everything, SQLite and PostgreSQL, 3 runs
    python bench/run.py --quick          # small smoke version (< 2 minutes)
    python bench/run.py --database postgresql --only burst,scale --runs 2

Measurements (--only takes a comma-separated subset of these names):

  lateness    start lateness (started_at - due_at) of 2,000 payments due over 60 s, concurrency 50
              (bench/lateness.py's runs, reused as they are)
  throughput  scheduled -> succeeded, payments/s, concurrency 3 / 50 / 200, with the ledger
              executor and with a ledger executor that first sleeps 20 ms per call
  burst       10,000 payments due at the same instant: time until all succeeded, lateness
  scale       1,000,000 payments due in the future (+ 1,000,000 finished occurrences of history),
              a few due now: cost of one scheduler tick, EXPLAIN of the scheduler's queries
  footprint   peak RSS of a `paysched worker` process, Redis bytes per delayed job, what a
              completed job leaves in Redis
  overhead    bare BullMQ no-op jobs/s vs paysched payments/s with a no-op executor (concurrency
              50, the same Redis, the same run)

Redis is one private `redis-server` on a free port (no persistence) for the whole suite; every
database is a fresh SQLite file or a throw-away PostgreSQL database `paysched_bench_*`, dropped
afterwards (also on Ctrl-C / SIGTERM). Results: a table of medians on stdout,
bench/results/report.json (every run) and bench/results/lateness.png (lateness distribution);
--quick writes to bench/results/quick/ instead, so it never overwrites a full run.

Notes on method:
- payments are stored in bulk through the store's engine (one INSERT per 5,000 rows; the 1M
  schedule with INSERT ... SELECT generate_series / a recursive CTE), then one
  Scheduler.tick() materializes and enqueues them, as the service's own tick would;
- throughput and overhead time the worker pool alone (App.run(scheduler=False), the tick is
  timed separately: `e2e_per_s` includes it); burst and lateness run App.run with its scheduler,
  like `paysched run`. Notification delivery runs as configured by default (log channel);
- on PostgreSQL a concurrency whose pool (concurrency + 5, plus as much overflow) would exceed
  PG_CONNECTION_CAP connections gets an engine capped at that many (the report says where);
- medians are over --runs runs (--burst-runs / --scale-runs for the two heavy ones); the scale
  measurement times Sizes.scale_ticks ticks per load and takes their median.

Exit status: 0 when every run completed (all payments succeeded in time), 1 otherwise (targets
missed do not change it: they are reported), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bullmq import Job, Queue, Worker
from sqlalchemy import create_engine, event, insert, text

from paysched.app import App
from paysched.config import Settings
from paysched.db import tables as t
from paysched.db.store import Claim
from paysched.domain import FINAL_STATES, Occurrence, OccurrenceState, occurrence_key
from paysched.executors.base import ExecutionResult, Executor
from paysched.executors.ledger import LedgerExecutor
from paysched.queue import PaymentQueue
from paysched.views import lateness_ms

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
import lateness  # isort: skip
from common import (  # isort: skip
    DEFAULT_PG_ADMIN_URL,
    ROOT,
    PrivateRedis,
    database_version,
    fresh_database,
    git_revision,
    package_version,
    redis_version,
    summarise,
)

log = logging.getLogger("bench.run")

RESULTS_DIR = ROOT / "bench" / "results"
MEASUREMENTS = ("lateness", "throughput", "burst", "scale", "footprint", "overhead")
CURRENCY = "USD"
PAYER, PAYEE = "bench-payer", "bench-payee"
# PostgreSQL here allows 100 connections and other people's tests share it. paysched sizes its
# pool as concurrency + 5 (+ as much overflow): at concurrency 200 that is up to 410 connections.
# The bench caps its own engine at this many and says so in the report.
PG_CONNECTION_CAP = 60
TARGETS = {
    "lateness_p99_ms": 50.0,
    "burst_all_succeeded_s": 15.0,
    "tick_ms_1m": 50.0,
    "noop_vs_bullmq": 0.5,
}


@dataclass(frozen=True, slots=True)
class Sizes:
    lateness_payments: int = 2000
    lateness_window_s: float = 60.0
    throughput_payments: int = 1000
    throughput_concurrency: tuple[int, ...] = (3, 50, 200)
    burst_payments: int = 10_000
    scale_payments: int = 1_000_000
    scale_due_now: int = 10
    scale_ticks: int = 9
    footprint_delayed: int = 10_000
    footprint_worker_payments: int = 2000
    overhead_jobs: int = 3000


QUICK = Sizes(
    lateness_payments=150,
    lateness_window_s=6.0,
    throughput_payments=150,
    throughput_concurrency=(3, 50),
    burst_payments=600,
    scale_payments=50_000,
    scale_ticks=5,
    footprint_delayed=2000,
    footprint_worker_payments=200,
    overhead_jobs=400,
)


@dataclass(frozen=True, slots=True)
class Ctx:
    redis_url: str
    tmp: Path
    pg_admin_url: str
    databases: tuple[str, ...]
    runs: int
    burst_runs: int
    scale_runs: int
    sizes: Sizes
    quick: bool


# -- executors ------------------------------------------------------------------------------------


class SlowLedgerExecutor:
    """The ledger executor behind a 20 ms wait: a stand-in for a payment provider's latency."""

    name = "ledger+20ms"

    def __init__(self, inner: Executor, delay_s: float = 0.02) -> None:
        self._inner = inner
        self._delay_s = delay_s

    async def execute(self, claim: Claim, idempotency_key: str) -> ExecutionResult:
        await asyncio.sleep(self._delay_s)
        return await self._inner.execute(claim, idempotency_key)


class NoopExecutor:
    """Does nothing: the worker then marks the occurrence succeeded (Store.finish)."""

    name = "noop"

    async def execute(self, claim: Claim, idempotency_key: str) -> ExecutionResult:
        return ExecutionResult.succeeded(idempotency_key)


def _ledger(app: App) -> Executor:
    return LedgerExecutor(app.store, app.clock, app.pool)


EXECUTORS: dict[str, Callable[[App], Executor]] = {
    "ledger": _ledger,
    "ledger+20ms": lambda app: SlowLedgerExecutor(_ledger(app)),
    "noop": lambda app: NoopExecutor(),
}


# -- paysched on a fresh database -----------------------------------------------------------------


def settings_for(
    redis_url: str, database_url: str, data_dir: Path, *, concurrency: int, tag: str,
    lookahead: timedelta = timedelta(minutes=10), tick_cron: str = "* * * * *",
) -> Settings:  # fmt: skip
    base = Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "PAYSCHED_DATA_DIR": str(data_dir),
            "PAYSCHED_EMBEDDED_REDIS": "never",
            "PAYSCHED_QUEUE": f"{tag}-{secrets.token_hex(4)}",
            "PAYSCHED_QUEUE_PREFIX": "paysched-bench",
            "PAYSCHED_CONCURRENCY": str(concurrency),
            "PAYSCHED_TICK_CRON": tick_cron,
            "PAYSCHED_LOG_LEVEL": "WARNING",
        }
    )
    return base.with_overrides(lookahead=lookahead, shutdown_grace=timedelta(seconds=15))


def cap_pg_pool(app: App) -> int | None:
    """Swap in a smaller engine when paysched's own pool could exhaust the shared PostgreSQL."""
    store = app.store
    wanted = app.settings.concurrency + 5
    if store.dialect != "postgresql" or wanted <= PG_CONNECTION_CAP:
        return None
    old = store.engine
    store.engine = create_engine(
        old.url, pool_size=PG_CONNECTION_CAP, max_overflow=0, pool_pre_ping=True,
        pool_timeout=120,
    )  # fmt: skip
    old.dispose()
    return PG_CONNECTION_CAP


@contextlib.asynccontextmanager
async def paysched(
    ctx: Ctx, kind: str, tag: str, *, concurrency: int, executor: str = "ledger",
    funds: int = 0, **settings: Any,
) -> Any:  # fmt: skip
    """paysched (store, queue, scheduler, worker processor) on a fresh database and its own
    queue, with two accounts; the payer holds `funds`. Everything removed afterwards."""
    run_dir = ctx.tmp / f"{tag}-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    with fresh_database(kind, run_dir, ctx.pg_admin_url) as (db_url, _label):
        cfg = settings_for(ctx.redis_url, db_url, run_dir, concurrency=concurrency, tag=tag,
                           **settings)  # fmt: skip
        app = await asyncio.wait_for(App.open(cfg, executor_factory=EXECUTORS[executor]), 120)
        try:
            cap_pg_pool(app)
            now = app.clock.now()
            await app.db(app.store.create_account, PAYER, CURRENCY, now)
            await app.db(app.store.create_account, PAYEE, CURRENCY, now)
            if funds:
                await app.db(app.store.deposit, PAYER, funds, now)
            yield app
        finally:
            if app.queue is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(app.queue.obliterate(), 60)
            await app.close()
            shutil.rmtree(run_dir, ignore_errors=True)


def insert_payments(app: App, due: Sequence[datetime]) -> None:
    """Store one-time payments in bulk (one INSERT per 5,000, straight through the engine)."""
    store = app.store
    payer = store.get_account(PAYER).id
    payee = store.get_account(PAYEE).id
    now = app.clock.now()
    rows = [
        dict(payer_id=payer, payee_id=payee, amount=1, currency=CURRENCY, state="active",
             due_at=d, cron=None, timezone=None, next_due_at=d, memo="bench", created_at=now,
             updated_at=now)
        for d in due
    ]  # fmt: skip
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(t.payments), rows[start : start + 5000])


def queue_key(app: App, suffix: str) -> str:
    assert app.queue is not None
    return str(app.queue._queue.toKey(suffix))


async def wait_all_final(app: App, n: int, timeout_s: float) -> bool:
    """Until n jobs are completed/failed in Redis (polled every 50 ms) or the database says all
    n occurrences are final (every 2 s). False on timeout."""
    assert app.queue is not None
    client = app.queue.redis
    completed, failed = queue_key(app, "completed"), queue_key(app, "failed")
    deadline = time.monotonic() + timeout_s
    next_db = time.monotonic() + 2
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        pipe.zcard(completed)
        pipe.zcard(failed)
        done, bad = await pipe.execute()
        if int(done) + int(bad) >= n:
            return True
        if time.monotonic() >= next_db:
            counts = await app.db(app.store.occurrence_counts)
            if sum(counts[s.value] for s in FINAL_STATES) >= n:
                return True
            next_db = time.monotonic() + 2
        await asyncio.sleep(0.05)
    return False


@contextlib.asynccontextmanager
async def running(app: App, *, scheduler: bool) -> Any:
    """App.run in a task for the duration of the block; graceful stop afterwards."""
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop, scheduler=scheduler, worker=True))
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception as exc:
            log.warning("app.run ended with %r", exc)


def occurrence_stats(occs: Sequence[Occurrence]) -> dict[str, Any]:
    states: dict[str, int] = {}
    for o in occs:
        states[o.state.value] = states.get(o.state.value, 0) + 1
    return {"states": states, "retried": sum(1 for o in occs if o.attempts > 1)}


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


# -- 1. lateness ----------------------------------------------------------------------------------


async def bench_lateness(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        plan = lateness.Plan(
            payments=ctx.sizes.lateness_payments, window_s=ctx.sizes.lateness_window_s,
            lead_s=lateness.MIN_LEAD_S, concurrency=50, database=kind,
            pg_admin_url=ctx.pg_admin_url, create_threads=1 if kind == "sqlite" else 8,
        )  # fmt: skip
        per_payment = await lateness.calibrate(plan, ctx.redis_url, ctx.tmp)
        plan = replace(plan, lead_s=lateness.auto_lead(plan, per_payment))
        rng = random.Random(secrets.randbits(32))
        runs = []
        for number in range(1, ctx.runs + 1):
            result = await lateness.one_run(number, plan, ctx.redis_url, ctx.tmp, rng)
            lat = result["lateness_ms"]
            print(f"  lateness {kind} run {number}: p50 {lat['p50']} p95 {lat['p95']} "
                  f"p99 {lat['p99']} max {lat['max']} ms ({result['states']})",
                  flush=True)  # fmt: skip
            runs.append(result)
        out[kind] = {
            "payments": plan.payments, "window_s": plan.window_s, "concurrency": 50,
            "lead_s": plan.lead_s, "runs": runs,
            "median_ms": {m: median([r["lateness_ms"][m] for r in runs])
                          for m in ("p50", "p95", "p99", "max", "mean")},
            "complete": all(r["complete"] and not r["creation_overran"] for r in runs),
        }  # fmt: skip
    return out


# -- 2. throughput --------------------------------------------------------------------------------


async def throughput_run(
    ctx: Ctx, kind: str, concurrency: int, executor: str, n: int, tag: str = "tput"
) -> dict[str, Any]:
    """n payments due now: stored in bulk, one scheduler tick (materialize + enqueue), then the
    worker pool (App.run without its scheduler) until all are final.

    payments_per_s = n / (last finished_at - start of App.run); e2e_per_s also counts the tick.
    """
    async with paysched(ctx, kind, tag, concurrency=concurrency, executor=executor,
                        funds=n) as app:  # fmt: skip
        assert app.scheduler is not None
        due = app.clock.now() - timedelta(milliseconds=1)
        await app.db(insert_payments, app, [due] * n)
        tick_began = time.monotonic()
        await asyncio.wait_for(app.scheduler.tick(), 300)
        tick_s = time.monotonic() - tick_began
        started = app.clock.now()
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        async with running(app, scheduler=False):
            ok = await wait_all_final(app, n, timeout_s=max(120.0, n / 5))
        cpu_pct = 100 * (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9)
        occs = await app.db(app.store.all_occurrences)
        finished = [o.finished_at for o in occs if o.finished_at is not None]
        exec_s = (max(finished) - started).total_seconds() if finished else None
        succeeded = sum(1 for o in occs if o.state == OccurrenceState.SUCCEEDED)
        complete = ok and succeeded == n
        return {
            "database": kind, "concurrency": concurrency, "executor": executor, "payments": n,
            "tick_s": round(tick_s, 3), "exec_s": round(exec_s, 3) if exec_s else None,
            "payments_per_s": round(n / exec_s, 1) if exec_s and complete else None,
            "e2e_per_s": round(n / (exec_s + tick_s), 1) if exec_s and complete else None,
            "bench_process_cpu_pct": round(cpu_pct), "complete": complete,
            "pg_pool_capped_at": PG_CONNECTION_CAP
            if kind == "postgresql" and concurrency + 5 > PG_CONNECTION_CAP else None,
            **occurrence_stats(occs),
        }  # fmt: skip


async def bench_throughput(ctx: Ctx) -> dict[str, Any]:
    configs = [
        (kind, executor, c)
        for kind in ctx.databases
        for executor in ("ledger", "ledger+20ms")
        for c in ctx.sizes.throughput_concurrency
    ]
    out: dict[str, Any] = {}
    for kind, executor, c in configs:
        runs = []
        for number in range(1, ctx.runs + 1):
            r = await throughput_run(ctx, kind, c, executor, ctx.sizes.throughput_payments)
            print(f"  throughput {kind} {executor} c={c} run {number}: {r['payments_per_s']} "
                  f"payments/s (tick {r['tick_s']}s, cpu {r['bench_process_cpu_pct']}%)",
                  flush=True)  # fmt: skip
            runs.append(r)
        out[f"{kind}/{executor}/c{c}"] = {
            "database": kind, "executor": executor, "concurrency": c, "runs": runs,
            "median_payments_per_s": median([r["payments_per_s"] for r in runs]),
            "median_e2e_per_s": median([r["e2e_per_s"] for r in runs]),
            "median_tick_s": median([r["tick_s"] for r in runs]),
            "complete": all(r["complete"] for r in runs),
        }  # fmt: skip
    return out


# -- 3. burst -------------------------------------------------------------------------------------


async def burst_run(ctx: Ctx, kind: str, n: int, per_payment_tick_s: float) -> dict[str, Any]:
    """n payments due at the same instant T, materialized and enqueued (delayed) before T by
    one tick; App.run (scheduler + workers, concurrency 50) from before T until all final."""
    async with paysched(ctx, kind, "burst", concurrency=50, funds=n) as app:
        assert app.scheduler is not None
        lead_s = max(5.0, 1.5 * per_payment_tick_s * n + 3.0)
        due = (app.clock.now() + timedelta(seconds=lead_s)).replace(microsecond=0)
        await app.db(insert_payments, app, [due] * n)
        tick_began = time.monotonic()
        await asyncio.wait_for(app.scheduler.tick(), 600)
        tick_s = time.monotonic() - tick_began
        async with running(app, scheduler=True):
            margin_s = (due - app.clock.now()).total_seconds()
            ok = await wait_all_final(app, n, timeout_s=max(margin_s, 0) + 300)
        occs = await app.db(app.store.all_occurrences)
        late = [v for o in occs if (v := lateness_ms(o)) is not None]
        finished = [o.finished_at for o in occs if o.finished_at is not None]
        all_s = (max(finished) - due).total_seconds() if finished else None
        succeeded = sum(1 for o in occs if o.state == OccurrenceState.SUCCEEDED)
        complete = ok and succeeded == n
        return {
            "database": kind, "payments": n, "concurrency": 50, "lead_s": round(lead_s, 1),
            "tick_s": round(tick_s, 3), "first_due_margin_s": round(margin_s, 3),
            "overran": margin_s < 0.5, "complete": complete,
            "all_succeeded_after_s": round(all_s, 3) if all_s is not None and complete else None,
            "payments_per_s": round(n / all_s, 1) if all_s and complete else None,
            "lateness_ms": summarise(late), **occurrence_stats(occs),
        }  # fmt: skip


async def tick_cost_per_payment(ctx: Ctx, kind: str, n: int = 500) -> float:
    async with paysched(ctx, kind, "calib", concurrency=3, funds=n) as app:
        assert app.scheduler is not None
        await app.db(insert_payments, app, [app.clock.now() + timedelta(seconds=60)] * n)
        began = time.monotonic()
        await app.scheduler.tick()
        return (time.monotonic() - began) / n


async def bench_burst(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = ctx.sizes.burst_payments
    for kind in ctx.databases:
        per_payment = await tick_cost_per_payment(ctx, kind)
        runs = []
        for number in range(1, ctx.burst_runs + 1):
            r = await burst_run(ctx, kind, n, per_payment)
            lat = r["lateness_ms"]
            print(f"  burst {kind} run {number}: {n} payments all succeeded after "
                  f"{r['all_succeeded_after_s']}s ({r['payments_per_s']}/s), lateness p50 "
                  f"{lat['p50']} p99 {lat['p99']} ms; tick {r['tick_s']}s, margin "
                  f"{r['first_due_margin_s']}s", flush=True)  # fmt: skip
            runs.append(r)
        out[kind] = {
            "payments": n, "runs": runs,
            "median_all_succeeded_s": median([r["all_succeeded_after_s"] for r in runs]),
            "median_payments_per_s": median([r["payments_per_s"] for r in runs]),
            "median_lateness_p50_ms": median([r["lateness_ms"]["p50"] for r in runs]),
            "median_lateness_p99_ms": median([r["lateness_ms"]["p99"] for r in runs]),
            "median_tick_s": median([r["tick_s"] for r in runs]),
            "complete": all(r["complete"] and not r["overran"] for r in runs),
        }  # fmt: skip
    return out


# -- 4. scale of the schedule ---------------------------------------------------------------------

_PG_FUTURE = """
INSERT INTO payments (payer_id, payee_id, amount, currency, state, due_at, cron, timezone,
                      next_due_at, memo, created_at, updated_at)
SELECT :payer, :payee, 1, 'USD', 'active', ts, NULL, NULL, ts, '', now(), now()
FROM (SELECT now() + interval '1 day' + g * interval '1 second' AS ts
      FROM generate_series(1, :n) AS g) AS s
"""
_PG_HISTORY = """
INSERT INTO occurrences (payment_id, due_at, key, state, attempts, fence, reason, started_at,
                         finished_at, created_at, updated_at)
SELECT id, now() - interval '30 day' + (id % 2000000) * interval '1 second',
       'hist-' || id, 'succeeded', 1, 1, NULL, now(), now(), now(), now()
FROM payments WHERE next_due_at > now() + interval '1 hour'
"""
_SQLITE_FUTURE = """
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n)
INSERT INTO payments (payer_id, payee_id, amount, currency, state, due_at, cron, timezone,
                      next_due_at, memo, created_at, updated_at)
SELECT :payer, :payee, 1, 'USD', 'active', ts, NULL, NULL, ts, '', :now, :now
FROM (SELECT datetime('now', '+1 day', '+' || i || ' seconds') || '.000000' AS ts FROM g)
"""
_SQLITE_HISTORY = """
INSERT INTO occurrences (payment_id, due_at, key, state, attempts, fence, reason, started_at,
                         finished_at, created_at, updated_at)
SELECT id, datetime('now', '-30 day', '+' || (id % 2000000) || ' seconds') || '.000000',
       'hist-' || id, 'succeeded', 1, 1, NULL, :now, :now, :now, :now
FROM payments WHERE next_due_at > :later
"""


def bulk_schedule(app: App, n: int) -> dict[str, float]:
    """n payments due 1 day + i seconds from now, and one finished occurrence of history each."""
    store = app.store
    payer, payee = store.get_account(PAYER).id, store.get_account(PAYEE).id
    now = app.clock.now().replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    later = (app.clock.now() + timedelta(hours=1)).replace(tzinfo=None)
    timings: dict[str, float] = {}
    with store.engine.begin() as conn:
        began = time.monotonic()
        if store.dialect == "postgresql":
            conn.execute(text(_PG_FUTURE), {"payer": payer, "payee": payee, "n": n})
            timings["insert_payments_s"] = time.monotonic() - began
            conn.execute(text(_PG_HISTORY))
        else:
            params = {"payer": payer, "payee": payee, "n": n, "now": now}
            conn.execute(text(_SQLITE_FUTURE), params)
            timings["insert_payments_s"] = time.monotonic() - began
            later_s = later.isoformat(sep=" ", timespec="microseconds")
            conn.execute(text(_SQLITE_HISTORY), {"now": now, "later": later_s})
        timings["insert_total_s"] = time.monotonic() - began
    if store.dialect == "postgresql":
        # What autovacuum does within a minute of such a load; the planner needs the stats.
        began = time.monotonic()
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
        timings["analyze_s"] = time.monotonic() - began
    return {k: round(v, 2) for k, v in timings.items()}


@contextlib.contextmanager
def capture_sql(app: App) -> Iterator[list[tuple[str, Any]]]:
    captured: list[tuple[str, Any]] = []

    def listener(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(app.store.engine, "before_cursor_execute", listener)
    try:
        yield captured
    finally:
        event.remove(app.store.engine, "before_cursor_execute", listener)


def explain(app: App, statement: str, parameters: Any) -> list[str]:
    store = app.store
    if store.dialect == "postgresql":
        prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
    else:
        prefix = "EXPLAIN QUERY PLAN "
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + statement, parameters).all()
        conn.rollback()
    if store.dialect == "postgresql":
        return [str(r[0]) for r in rows]
    return [f"{'  ' * int(r[1] > 0)}{r[-1]}" for r in rows]


def _timed_ms(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


async def scale_run(ctx: Ctx, kind: str) -> dict[str, Any]:
    n = ctx.sizes.scale_payments
    async with paysched(ctx, kind, "scale", concurrency=3, funds=1000,
                        lookahead=timedelta(minutes=5)) as app:  # fmt: skip
        scheduler = app.scheduler
        assert scheduler is not None
        began = time.monotonic()
        load = await asyncio.wait_for(app.db(bulk_schedule, app, n), 900)
        load_s = time.monotonic() - began
        with app.store.engine.connect() as conn:
            future = conn.execute(text("SELECT count(*) FROM payments")).scalar_one()
            history = conn.execute(text("SELECT count(*) FROM occurrences")).scalar_one()
        due_now = app.clock.now() - timedelta(milliseconds=1)
        await app.db(insert_payments, app, [due_now] * ctx.sizes.scale_due_now)

        with capture_sql(app) as statements:
            first = time.perf_counter()
            result = await scheduler.tick()  # materializes and enqueues the few due now
            first_ms = (time.perf_counter() - first) * 1000
        ticks = []
        for _ in range(ctx.sizes.scale_ticks):
            began_tick = time.perf_counter()
            await scheduler.tick()
            ticks.append((time.perf_counter() - began_tick) * 1000)

        store = app.store
        horizon = app.clock.now() + timedelta(minutes=5)
        mat_ms = [
            await app.db(_timed_ms, lambda: store.materialize_due(app.clock.now(), horizon))
            for _ in range(5)
        ]
        pend_ms = [
            await app.db(_timed_ms, lambda: store.pending_occurrences(horizon)) for _ in range(5)
        ]
        discovery = next(
            (s for s in statements if "FROM payments" in s[0] and "next_due_at <=" in s[0]), None
        )
        pending = next(
            (s for s in statements if "FROM occurrences" in s[0] and "state IN" in s[0]), None
        )
        plans = {
            "materialize_due": await app.db(explain, app, *discovery) if discovery else None,
            "pending_occurrences": await app.db(explain, app, *pending) if pending else None,
        }
        return {
            "database": kind, "future_payments": int(future),
            "history_occurrences": int(history),
            "due_now": ctx.sizes.scale_due_now, "created_by_first_tick": result.created,
            "load": load, "load_s": round(load_s, 1),
            "first_tick_ms": round(first_ms, 1),
            "tick_ms": [round(v, 1) for v in ticks],
            "median_tick_ms": round(statistics.median(ticks), 1),
            "median_materialize_due_ms": round(statistics.median(mat_ms), 2),
            "median_pending_occurrences_ms": round(statistics.median(pend_ms), 2),
            "explain": plans,
            "statements": {"materialize_due": discovery[0] if discovery else None,
                           "pending_occurrences": pending[0] if pending else None},
        }  # fmt: skip


async def bench_scale(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        runs = []
        for number in range(1, ctx.scale_runs + 1):
            r = await scale_run(ctx, kind)
            print(f"  scale {kind} run {number}: {r['future_payments']:,} future payments "
                  f"(loaded in {r['load_s']}s): tick median {r['median_tick_ms']} ms "
                  f"(first {r['first_tick_ms']} ms), materialize_due "
                  f"{r['median_materialize_due_ms']} ms, pending_occurrences "
                  f"{r['median_pending_occurrences_ms']} ms", flush=True)  # fmt: skip
            for name, plan in r["explain"].items():
                print(f"    EXPLAIN {name}:")
                for line in plan or ["(query not captured)"]:
                    print(f"      {line}")
            runs.append(r)
        out[kind] = {
            "runs": runs, "future_payments": ctx.sizes.scale_payments,
            "median_tick_ms": median([r["median_tick_ms"] for r in runs]),
            "median_first_tick_ms": median([r["first_tick_ms"] for r in runs]),
            "complete": all(r["created_by_first_tick"] == ctx.sizes.scale_due_now for r in runs),
        }  # fmt: skip
    return out


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
    queue = PaymentQueue(ctx.redis_url, f"delayed-{secrets.token_hex(4)}", "paysched-bench",
                         3, app.backoff)  # fmt: skip
    try:
        client = queue.redis
        now = app.clock.now()
        occs = [
            Occurrence(id=i, payment_id=i, key=occurrence_key(i, 0) + f"{i:07d}",
                       due_at=now + timedelta(hours=1, milliseconds=i),
                       state=OccurrenceState.SCHEDULED, attempts=0, fence=0, reason=None,
                       started_at=None, finished_at=None)
            for i in range(1, n + 1)
        ]  # fmt: skip
        await queue.ping()
        before = await _used_memory(client)
        await queue.enqueue(occs, now)
        after = await _used_memory(client)
        keys, usage, kinds = await _key_usage(client, f"paysched-bench:{queue.name}:*")
        return {
            "jobs": n, "used_memory_delta_bytes": after - before,
            "bytes_per_delayed_job": round((after - before) / n),
            "keys": keys, "keys_by_kind": kinds, "memory_usage_bytes": usage,
            "memory_usage_per_job": round(usage / n),
        }  # fmt: skip
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
            [sys.executable, "-m", "paysched", "worker"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(settings.data_dir / "worker.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
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
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        after_jobs = await _used_memory(client)
        keys, usage, kinds = await _key_usage(client, pattern)
        counts = await app.queue.counts()
        return {
            "database": kind, "payments": n, "concurrency": 50, "complete": ok,
            "busy_s": round(busy_s, 2),
            "worker_rss_idle_mib": round(idle.get("VmRSS", 0) / 1024, 1),
            "worker_rss_peak_mib": round(peak.get("VmHWM", 0) / 1024, 1),
            "completed_in_redis": counts["completed"],
            "keep_completed": settings.keep_completed,
            "used_memory_delta_bytes": after_jobs - before_jobs,
            "bytes_per_completed_job": round((after_jobs - before_jobs) / n),
            "keys_before": base_keys, "keys_after": keys, "keys_by_kind": kinds,
            "keys_per_completed_job": round((keys - base_keys) / n, 2),
            "memory_usage_per_completed_job": round((usage - base_usage) / n),
        }  # fmt: skip


async def bench_footprint(ctx: Ctx) -> dict[str, Any]:
    kind = "postgresql" if "postgresql" in ctx.databases else ctx.databases[0]
    runs = []
    for number in range(1, ctx.runs + 1):
        async with paysched(ctx, "sqlite", "footprint-delayed", concurrency=3) as app:
            delayed = await delayed_job_memory(ctx, app, ctx.sizes.footprint_delayed)
        worker = await worker_footprint(ctx, kind, ctx.sizes.footprint_worker_payments)
        print(f"  footprint run {number}: worker RSS idle {worker['worker_rss_idle_mib']} MiB, "
              f"peak {worker['worker_rss_peak_mib']} MiB; {delayed['bytes_per_delayed_job']} B "
              f"per delayed job; {worker['bytes_per_completed_job']} B and "
              f"{worker['keys_per_completed_job']} keys per completed job",
              flush=True)  # fmt: skip
        runs.append({"delayed": delayed, "worker": worker})
    return {
        "database": kind, "runs": runs,
        "median_worker_rss_idle_mib": median([r["worker"]["worker_rss_idle_mib"] for r in runs]),
        "median_worker_rss_peak_mib": median([r["worker"]["worker_rss_peak_mib"] for r in runs]),
        "median_bytes_per_delayed_job":
            median([r["delayed"]["bytes_per_delayed_job"] for r in runs]),
        "median_bytes_per_completed_job":
            median([r["worker"]["bytes_per_completed_job"] for r in runs]),
        "median_keys_per_completed_job":
            median([r["worker"]["keys_per_completed_job"] for r in runs]),
        "complete": all(r["worker"]["complete"] for r in runs),
    }  # fmt: skip


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
            {"name": "payment",
             "data": {"occurrence_id": i, "payment_id": i, "due_at_ms": 0},
             "opts": {"jobId": f"bare-{i}", "attempts": 3,
                      "removeOnComplete": {"age": 86_400, "count": 10_000},
                      "removeOnFail": {"age": 7 * 86_400}}}
            for i in range(1, n + 1)
        ]  # fmt: skip
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

        opts = {"connection": ctx.redis_url, "prefix": prefix, "concurrency": concurrency,
                "autorun": False}  # fmt: skip
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
        return {"jobs": n, "concurrency": concurrency, "complete": ok,
                "seconds": round(elapsed, 3),
                "jobs_per_s": round(n / elapsed, 1) if ok else None}  # fmt: skip
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
                if ours["payments_per_s"] and bare["jobs_per_s"] else None
            )  # fmt: skip
            print(f"  overhead {kind} run {number}: bare BullMQ {bare['jobs_per_s']} jobs/s, "
                  f"paysched no-op {ours['payments_per_s']} payments/s, ratio {ratio}",
                  flush=True)  # fmt: skip
            runs.append({"bare_bullmq": bare, "paysched_noop": ours, "ratio": ratio})
        out[kind] = {
            "jobs": n, "concurrency": 50, "runs": runs,
            "median_bare_jobs_per_s": median([r["bare_bullmq"]["jobs_per_s"] for r in runs]),
            "median_noop_payments_per_s":
                median([r["paysched_noop"]["payments_per_s"] for r in runs]),
            "median_ratio": median([r["ratio"] for r in runs]),
            "complete": all(r["ratio"] is not None for r in runs),
        }  # fmt: skip
    return out


# -- report ---------------------------------------------------------------------------------------


def _row(name: str, db: str, value: Any, unit: str, target: str = "", ok: bool | None = None
         ) -> dict[str, Any]:  # fmt: skip
    return {"measurement": name, "database": db, "median": value, "unit": unit,
            "target": target, "met": ok}  # fmt: skip


def summary_rows(all_results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    results = {k: v for k, v in all_results.items() if "error" not in v}
    for name, failed in all_results.items():
        if "error" in failed:
            rows.append(_row(f"{name}: FAILED {failed['error'][:60]}", "-", None, ""))
    for db, r in results.get("lateness", {}).items():
        m = r["median_ms"]
        for p in ("p50", "p95", "p99", "max"):
            target = TARGETS["lateness_p99_ms"] if p == "p99" else None
            rows.append(
                _row(
                    f"lateness {p}",
                    db,
                    m[p],
                    "ms",
                    f"<= {target:g} ms" if target else "",
                    None if target is None or m[p] is None else m[p] <= target,
                )
            )
    for r in results.get("throughput", {}).values():
        rows.append(
            _row(
                f"throughput {r['executor']} c={r['concurrency']}",
                r["database"],
                r["median_payments_per_s"],
                "payments/s",
            )
        )
    for db, r in results.get("burst", {}).items():
        v = r["median_all_succeeded_s"]
        target = TARGETS["burst_all_succeeded_s"]
        rows.append(
            _row(
                f"burst {r['payments']:,}: all succeeded",
                db,
                v,
                "s",
                f"<= {target:g} s",
                None if v is None else v <= target,
            )
        )
        rows.append(_row("burst lateness p50", db, r["median_lateness_p50_ms"], "ms"))
        rows.append(_row("burst lateness p99", db, r["median_lateness_p99_ms"], "ms"))
    for db, r in results.get("scale", {}).items():
        v = r["median_tick_ms"]
        target = TARGETS["tick_ms_1m"]
        rows.append(
            _row(
                f"tick, {r['future_payments']:,} future payments",
                db,
                v,
                "ms",
                f"<= {target:g} ms",
                None if v is None else v <= target,
            )
        )
    fp = results.get("footprint")
    if fp:
        db = fp["database"]
        rows.append(_row("worker RSS idle", db, fp["median_worker_rss_idle_mib"], "MiB"))
        rows.append(_row("worker RSS peak (c=50)", db, fp["median_worker_rss_peak_mib"], "MiB"))
        rows.append(_row("Redis per delayed job", "-", fp["median_bytes_per_delayed_job"], "B"))
        rows.append(_row("Redis per completed job", db, fp["median_bytes_per_completed_job"], "B"))
        rows.append(
            _row("Redis keys per completed job", db, fp["median_keys_per_completed_job"], "keys")
        )
    for db, r in results.get("overhead", {}).items():
        rows.append(_row("bare BullMQ no-op c=50", "-", r["median_bare_jobs_per_s"], "jobs/s"))
        rows.append(_row("paysched no-op c=50", db, r["median_noop_payments_per_s"], "payments/s"))
        v = r["median_ratio"]
        target = TARGETS["noop_vs_bullmq"]
        rows.append(
            _row(
                "paysched no-op / bare BullMQ",
                db,
                v,
                "ratio",
                f">= {target:g}",
                None if v is None else v >= target,
            )
        )
    return rows  # fmt: skip


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    header = f"{'measurement':<38} {'database':<11} {'median':>12} {'unit':<11} {'target':<11} met"
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        value = "-" if r["median"] is None else f"{r['median']:g}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        print(f"{r['measurement']:<38} {r['database']:<11} {value:>12} {r['unit']:<11} "
              f"{r['target']:<11} {met}")  # fmt: skip


def lateness_chart(results: dict[str, Any], path: Path) -> bool:
    """Histogram and CDF of start lateness, all runs pooled, one series per database."""
    data = {
        db: [v for run in r["runs"] for v in run.get("lateness_values_ms", [])]
        for db, r in results.get("lateness", {}).items()
    }
    data = {db: sorted(v) for db, v in data.items() if v}
    if not data:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    top = max(max(v) for v in data.values())
    bins = range(0, int(top) + 2)
    for db, values in data.items():
        hist.hist(
            values, bins=bins, histtype="step", linewidth=1.5, label=f"{db} (n={len(values)})"
        )
        ys = [(i + 1) / len(values) for i in range(len(values))]
        cdf.plot(values, ys, label=db)
    hist.set_yscale("log")
    hist.set_xlabel("start lateness (ms)")
    hist.set_ylabel("payments")
    hist.set_title("start lateness, all runs")
    hist.axvline(TARGETS["lateness_p99_ms"], color="red", linestyle="--", linewidth=1,
                 label="p99 target")  # fmt: skip
    hist.legend()
    cdf.set_xlim(0, max(top * 1.05, TARGETS["lateness_p99_ms"] * 1.1))
    cdf.set_xlabel("start lateness (ms)")
    cdf.set_ylabel("fraction started within")
    cdf.set_title("cumulative")
    for q in (0.5, 0.95, 0.99):
        cdf.axhline(q, color="grey", linestyle=":", linewidth=0.8)
    cdf.axvline(TARGETS["lateness_p99_ms"], color="red", linestyle="--", linewidth=1)
    cdf.legend(loc="lower right")
    fig.suptitle("paysched start lateness (started_at - due_at)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def strip_values(results: dict[str, Any]) -> None:
    for r in results.get("lateness", {}).values():
        for run in r["runs"]:
            run.pop("lateness_values_ms", None)


# -- main -----------------------------------------------------------------------------------------

Bench = Callable[[Ctx], Awaitable[dict[str, Any]]]
BENCHES: dict[str, Bench] = {
    "lateness": bench_lateness,
    "throughput": bench_throughput,
    "burst": bench_burst,
    "scale": bench_scale,
    "footprint": bench_footprint,
    "overhead": bench_overhead,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="paysched benchmark suite: runs each measurement several times, prints "
        "medians, writes bench/results/report.json and lateness.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per measurement (default 3; 1 with --quick)")  # fmt: skip
    parser.add_argument("--burst-runs", type=int, default=None,
                        help="runs of the burst (default: --runs)")  # fmt: skip
    parser.add_argument("--scale-runs", type=int, default=1,
                        help="runs of the 1M-schedule load (each times several ticks)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small smoke version (< 2 min)")
    parser.add_argument("--burst-payments", type=int, default=None,
                        help="burst size (default 10,000; 600 with --quick)")  # fmt: skip
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")  # fmt: skip
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="bench/results; bench/results/quick with --quick")  # fmt: skip
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in MEASUREMENTS]
    if unknown or not only:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    args.only = [name for name in MEASUREMENTS if name in only]
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.out_dir is None:
        args.out_dir = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    if (
        args.runs < 1
        or args.scale_runs < 1
        or (args.burst_runs is not None and args.burst_runs < 1)
    ):
        parser.error("run counts must be at least 1")
    return args


async def suite(ctx: Ctx, names: Sequence[str]) -> tuple[dict[str, Any], dict[str, float]]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    for name in names:
        print(f"\n== {name} ==", flush=True)
        began = time.monotonic()
        try:
            results[name] = await BENCHES[name](ctx)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.exception("%s failed", name)
            results[name] = {"error": repr(exc)}
        durations[name] = round(time.monotonic() - began, 1)
        print(f"   ({name} took {durations[name]:.0f}s)", flush=True)
    return results, durations


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupt)
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    started_at = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="paysched-bench-"))
    private = PrivateRedis(tmp / "redis")
    began = time.monotonic()
    try:
        redis_url = private.start()
        ctx = Ctx(
            redis_url=redis_url, tmp=tmp, pg_admin_url=args.pg_admin_url, databases=databases,
            runs=args.runs, burst_runs=args.burst_runs or args.runs, scale_runs=args.scale_runs,
            sizes=replace(QUICK if args.quick else Sizes(),
                          **({"burst_payments": args.burst_payments}
                             if args.burst_payments else {})),
            quick=args.quick,
        )  # fmt: skip
        environment = {
            "date": started_at.isoformat(timespec="seconds"),
            "command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
            "quick": args.quick, "runs": args.runs, "burst_runs": ctx.burst_runs,
            "scale_runs": ctx.scale_runs, "databases": list(databases),
            "sizes": {k: getattr(ctx.sizes, k) for k in Sizes.__dataclass_fields__},
            "redis": "private redis-server (--save '' --appendonly no)",
            "redis_version": redis_version(redis_url),
            "database_versions": {d: database_version(d, args.pg_admin_url) for d in databases},
            "pg_connection_cap": PG_CONNECTION_CAP,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "packages": {n: package_version(n) for n in
                         ("paysched", "bullmq", "redis", "SQLAlchemy", "psycopg", "matplotlib")},
            "git": git_revision(),
        }  # fmt: skip
        print(f"paysched bench: {', '.join(args.only)} on {', '.join(databases)}; "
              f"{args.runs} run(s){' (quick)' if args.quick else ''}; Redis "
              f"{environment['redis_version']} (private, {redis_url})", flush=True)  # fmt: skip
        results, durations = asyncio.run(suite(ctx, args.only))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        private.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    environment["durations_s"] = durations
    environment["total_s"] = round(time.monotonic() - began, 1)
    rows = summary_rows(results)
    print_table(rows)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = out_dir / "lateness.png"
    if lateness_chart(results, chart):
        print(f"\nchart written to {chart}")
    strip_values(results)
    complete = all(
        "error" not in r and r.get("complete", True) for r in results.values()
    ) and all(
        sub.get("complete", True)
        for r in results.values() if "error" not in r
        for sub in r.values() if isinstance(sub, dict)
    )  # fmt: skip
    report = {"environment": environment, "targets": TARGETS, "summary": rows,
              "results": results, "all_complete": complete}  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report written to {out_dir / 'report.json'} (total {environment['total_s']:.0f}s)")
    if not complete:
        print("WARNING: some run did not complete; see the report", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
