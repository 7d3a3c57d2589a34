"""Shared by the measurements: sizes, the context of a run, executors, paysched on a fresh
database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert

from paysched.app import App
from paysched.config import Settings
from paysched.db import tables as t
from paysched.domain import FINAL_STATES, Occurrence
from paysched.executors.base import ExecutionResult, Executor, PaymentOrder
from paysched.executors.ledger import LedgerExecutor

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from common import (  # isort: skip
    ROOT,
    fresh_database,
)

log = logging.getLogger("bench.run")

RESULTS_DIR = ROOT / "bench" / "results"
MEASUREMENTS = (
    "lateness",
    "throughput",
    "http",
    "burst",
    "processes",
    "scale",
    "footprint",
    "overhead",
    "cli",
    "api",
    "idle",
    "export",
)
CURRENCY = "USD"
PAYER, PAYEE = "bench-payer", "bench-payee"
# PostgreSQL here allows 100 connections and other people's tests share it. paysched sizes its
# pool as concurrency + 5 (+ as much overflow): at concurrency 200 that is up to 410 connections.
# The bench caps its own engine at this many and says so in the report.
PG_CONNECTION_CAP = 60
# Issue 20's targets (medians of >= 3 runs on the 2-core reference machine).
TARGETS = {
    "lateness_p99_ms": 20.0,
    "burst_all_succeeded_s": 10.0,
    "tick_ms_1m": 10.0,
    "noop_vs_bullmq": 0.6,
    # Wall time of a whole `paysched` process (median), on the 2-core reference machine.
    "cli_help_s": 0.3,
    "cli_stats_s": 0.6,
    # An idle `paysched run` (nothing due): issue 20's targets.
    "idle_redis_commands_per_s": 5.0,
    "idle_write_transactions_per_s": 0.0,
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
    cli_repeats: int = 15
    idle_window_s: float = 20.0
    export_occurrences: int = 1_000_000


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
    cli_repeats=5,
    idle_window_s=6.0,
    export_occurrences=20_000,
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

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        await asyncio.sleep(self._delay_s)
        return await self._inner.execute(order)


class NoopExecutor:
    """Does nothing: the worker then marks the occurrence succeeded (Execution.finish)."""

    name = "noop"

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        return ExecutionResult.succeeded(order.idempotency_key)


def noop_executor(settings: Settings) -> Executor:
    """PAYSCHED_EXECUTOR=bench_harness:noop_executor (bench/ on PYTHONPATH): the no-op executor
    for a `paysched` process the benchmark starts."""
    return NoopExecutor()


def _ledger(app: App) -> Executor:
    return LedgerExecutor(app.store, app.clock, app.pool)


EXECUTORS: dict[str, Callable[[App], Executor]] = {
    "ledger": _ledger,
    "ledger+20ms": lambda app: SlowLedgerExecutor(_ledger(app)),
    "noop": lambda app: NoopExecutor(),
}


# -- paysched on a fresh database -----------------------------------------------------------------


def settings_for(
    redis_url: str,
    database_url: str,
    data_dir: Path,
    *,
    concurrency: int,
    tag: str,
    lookahead: timedelta = timedelta(minutes=10),
    tick_cron: str = "* * * * *",
) -> Settings:
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
        old.url,
        pool_size=PG_CONNECTION_CAP,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=120,
    )
    old.dispose()
    return PG_CONNECTION_CAP


@contextlib.asynccontextmanager
async def paysched(
    ctx: Ctx,
    kind: str,
    tag: str,
    *,
    concurrency: int,
    executor: str = "ledger",
    funds: int = 0,
    executor_factory: Callable[[App], Executor] | None = None,
    **settings: Any,
) -> Any:
    """paysched (store, queue, scheduler, worker processor) on a fresh database and its own
    queue, with two accounts; the payer holds `funds`. Everything removed afterwards."""
    run_dir = ctx.tmp / f"{tag}-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    with fresh_database(kind, run_dir, ctx.pg_admin_url) as (db_url, _label):
        cfg = settings_for(
            ctx.redis_url, db_url, run_dir, concurrency=concurrency, tag=tag, **settings
        )
        factory = executor_factory or EXECUTORS[executor]
        app = await asyncio.wait_for(App.open(cfg, executor_factory=factory), 120)
        try:
            cap_pg_pool(app)
            now = app.clock.now()
            await app.db(app.store.accounts.create_account, PAYER, CURRENCY, now)
            await app.db(app.store.accounts.create_account, PAYEE, CURRENCY, now)
            if funds:
                await app.db(app.store.accounts.deposit, PAYER, funds, now)
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
    payer = store.accounts.get_account(PAYER).id
    payee = store.accounts.get_account(PAYEE).id
    now = app.clock.now()
    rows = [
        dict(
            payer_id=payer,
            payee_id=payee,
            amount=1,
            currency=CURRENCY,
            state="active",
            due_at=d,
            cron=None,
            timezone=None,
            next_due_at=d,
            memo="bench",
            created_at=now,
            updated_at=now,
        )
        for d in due
    ]
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(t.payments), rows[start : start + 5000])


async def store_and_tick(app: App, due: Sequence[datetime], timeout_s: float) -> float:
    """Store one-time payments due at `due` (insert_payments), then run one scheduler tick
    (materialize + enqueue): the seconds that tick took."""
    assert app.scheduler is not None
    await app.db(insert_payments, app, due)
    began = time.monotonic()
    await asyncio.wait_for(app.scheduler.tick(), timeout_s)
    return time.monotonic() - began


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
            counts = await app.db(app.store.reads.occurrence_counts)
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
