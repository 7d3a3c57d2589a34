"""4. Scale of the schedule: one scheduler tick with a million future payments."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import event, text

from paysched.app import App

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, insert_payments, median, paysched  # isort: skip
from bench_harness import PAYEE, PAYER  # isort: skip


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
    payer, payee = store.accounts.get_account(PAYER).id, store.accounts.get_account(PAYEE).id
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
    async with paysched(
        ctx, kind, "scale", concurrency=3, funds=1000, lookahead=timedelta(minutes=5)
    ) as app:
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
            await app.db(
                _timed_ms, lambda: store.payments.materialize_due(app.clock.now(), horizon)
            )
            for _ in range(5)
        ]
        pend_ms = [
            await app.db(_timed_ms, lambda: store.reads.pending_occurrences(horizon))
            for _ in range(5)
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
            "database": kind,
            "future_payments": int(future),
            "history_occurrences": int(history),
            "due_now": ctx.sizes.scale_due_now,
            "created_by_first_tick": result.created,
            "load": load,
            "load_s": round(load_s, 1),
            "first_tick_ms": round(first_ms, 1),
            "tick_ms": [round(v, 1) for v in ticks],
            "median_tick_ms": round(statistics.median(ticks), 1),
            "median_materialize_due_ms": round(statistics.median(mat_ms), 2),
            "median_pending_occurrences_ms": round(statistics.median(pend_ms), 2),
            "explain": plans,
            "statements": {
                "materialize_due": discovery[0] if discovery else None,
                "pending_occurrences": pending[0] if pending else None,
            },
        }


async def bench_scale(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        runs = []
        for number in range(1, ctx.scale_runs + 1):
            r = await scale_run(ctx, kind)
            print(
                f"  scale {kind} run {number}: {r['future_payments']:,} future payments "
                f"(loaded in {r['load_s']}s): tick median {r['median_tick_ms']} ms "
                f"(first {r['first_tick_ms']} ms), materialize_due "
                f"{r['median_materialize_due_ms']} ms, pending_occurrences "
                f"{r['median_pending_occurrences_ms']} ms",
                flush=True,
            )
            for name, plan in r["explain"].items():
                print(f"    EXPLAIN {name}:")
                for line in plan or ["(query not captured)"]:
                    print(f"      {line}")
            runs.append(r)
        out[kind] = {
            "runs": runs,
            "future_payments": ctx.sizes.scale_payments,
            "median_tick_ms": median([r["median_tick_ms"] for r in runs]),
            "median_first_tick_ms": median([r["first_tick_ms"] for r in runs]),
            "complete": all(r["created_by_first_tick"] == ctx.sizes.scale_due_now for r in runs),
        }
    return out
