"""2. Throughput: scheduled -> succeeded, payments/s, at several concurrencies."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from paysched.domain import OccurrenceState

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import PG_CONNECTION_CAP, Ctx, median, occurrence_stats, paysched  # isort: skip
from bench_harness import running, store_and_tick, wait_all_final  # isort: skip


# -- 2. throughput --------------------------------------------------------------------------------


async def throughput_run(
    ctx: Ctx, kind: str, concurrency: int, executor: str, n: int, tag: str = "tput"
) -> dict[str, Any]:
    """n payments due now: stored in bulk, one scheduler tick (materialize + enqueue), then the
    worker pool (App.run without its scheduler) until all are final.

    payments_per_s = n / (last finished_at - start of App.run); e2e_per_s also counts the tick.
    """
    async with paysched(ctx, kind, tag, concurrency=concurrency, executor=executor, funds=n) as app:
        due = app.clock.now() - timedelta(milliseconds=1)
        tick_s = await store_and_tick(app, [due] * n, timeout_s=300)
        started = app.clock.now()
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        async with running(app, scheduler=False):
            ok = await wait_all_final(app, n, timeout_s=max(120.0, n / 5))
        cpu_pct = 100 * (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9)
        occs = await app.db(app.store.reads.all_occurrences)
        finished = [o.finished_at for o in occs if o.finished_at is not None]
        exec_s = (max(finished) - started).total_seconds() if finished else None
        succeeded = sum(1 for o in occs if o.state == OccurrenceState.SUCCEEDED)
        complete = ok and succeeded == n
        return {
            "database": kind,
            "concurrency": concurrency,
            "executor": executor,
            "payments": n,
            "tick_s": round(tick_s, 3),
            "exec_s": round(exec_s, 3) if exec_s else None,
            "payments_per_s": round(n / exec_s, 1) if exec_s and complete else None,
            "e2e_per_s": round(n / (exec_s + tick_s), 1) if exec_s and complete else None,
            "bench_process_cpu_pct": round(cpu_pct),
            "complete": complete,
            "pg_pool_capped_at": PG_CONNECTION_CAP
            if kind == "postgresql" and concurrency + 5 > PG_CONNECTION_CAP
            else None,
            **occurrence_stats(occs),
        }


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
            print(
                f"  throughput {kind} {executor} c={c} run {number}: {r['payments_per_s']} "
                f"payments/s (tick {r['tick_s']}s, cpu {r['bench_process_cpu_pct']}%)",
                flush=True,
            )
            runs.append(r)
        out[f"{kind}/{executor}/c{c}"] = {
            "database": kind,
            "executor": executor,
            "concurrency": c,
            "runs": runs,
            "median_payments_per_s": median([r["payments_per_s"] for r in runs]),
            "median_e2e_per_s": median([r["e2e_per_s"] for r in runs]),
            "median_tick_s": median([r["tick_s"] for r in runs]),
            "complete": all(r["complete"] for r in runs),
        }
    return out
