"""3. A burst: many payments due at the same instant."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, median, occurrence_stats, paysched, store_and_tick  # isort: skip
from bench_harness import running, wait_all_final  # isort: skip

from paysched.domain import OccurrenceState
from paysched.views import lateness_ms

from common import (  # isort: skip
    summarise,
)


# -- 3. burst -------------------------------------------------------------------------------------


async def burst_run(ctx: Ctx, kind: str, n: int, per_payment_tick_s: float) -> dict[str, Any]:
    """n payments due at the same instant T, materialized and enqueued (delayed) before T by
    one tick; App.run (scheduler + workers, concurrency 50) from before T until all final."""
    # Beside the burst, payments due one by one while it drains (over ~n / 300 s, what one
    # process drains): how late does an on-time payment start behind a burst?
    ontime = max(20, n // 100)
    spacing_s = max(n / 300, 2.0) / ontime
    async with paysched(ctx, kind, "burst", concurrency=50, funds=n + ontime) as app:
        lead_s = max(5.0, 1.5 * per_payment_tick_s * (n + ontime) + 3.0)
        due = (app.clock.now() + timedelta(seconds=lead_s)).replace(microsecond=0)
        later = [due + timedelta(seconds=spacing_s * (i + 1)) for i in range(ontime)]
        tick_s = await store_and_tick(app, [due] * n + later, timeout_s=600)
        async with running(app, scheduler=True):
            margin_s = (due - app.clock.now()).total_seconds()
            # The last on-time payment is due spacing_s * ontime after the burst.
            wait_s = max(margin_s, 0) + spacing_s * ontime + 300
            ok = await wait_all_final(app, n + ontime, timeout_s=wait_s)
        everything = await app.db(app.store.reads.all_occurrences)
        occs = [o for o in everything if o.due_at == due]
        late = [v for o in occs if (v := lateness_ms(o)) is not None]
        behind = [v for o in everything if o.due_at > due and (v := lateness_ms(o)) is not None]
        finished = [o.finished_at for o in occs if o.finished_at is not None]
        all_s = (max(finished) - due).total_seconds() if finished else None
        succeeded = sum(1 for o in everything if o.state == OccurrenceState.SUCCEEDED)
        complete = ok and succeeded == n + ontime
        return {
            "database": kind,
            "payments": n,
            "concurrency": 50,
            "lead_s": round(lead_s, 1),
            "tick_s": round(tick_s, 3),
            "first_due_margin_s": round(margin_s, 3),
            "overran": margin_s < 0.5,
            "complete": complete,
            "all_succeeded_after_s": round(all_s, 3) if all_s is not None and complete else None,
            "payments_per_s": round(n / all_s, 1) if all_s and complete else None,
            "lateness_ms": summarise(late),
            "ontime_payments": ontime,
            "ontime_spacing_s": round(spacing_s, 3),
            "ontime_lateness_ms": summarise(behind),
            **occurrence_stats(occs),
        }


async def tick_cost_per_payment(ctx: Ctx, kind: str, n: int = 500) -> float:
    async with paysched(ctx, kind, "calib", concurrency=3, funds=n) as app:
        due = app.clock.now() + timedelta(seconds=60)
        return await store_and_tick(app, [due] * n, timeout_s=600) / n


async def bench_burst(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = ctx.sizes.burst_payments
    for kind in ctx.databases:
        per_payment = await tick_cost_per_payment(ctx, kind)
        runs = []
        for number in range(1, ctx.burst_runs + 1):
            r = await burst_run(ctx, kind, n, per_payment)
            lat, behind = r["lateness_ms"], r["ontime_lateness_ms"]
            print(
                f"  burst {kind} run {number}: {n} payments all succeeded after "
                f"{r['all_succeeded_after_s']}s ({r['payments_per_s']}/s), lateness p50 "
                f"{lat['p50']} p99 {lat['p99']} ms, on-time ones behind it p50 "
                f"{behind['p50']} p99 {behind['p99']} ms; tick {r['tick_s']}s, margin "
                f"{r['first_due_margin_s']}s",
                flush=True,
            )
            runs.append(r)
        out[kind] = {
            "payments": n,
            "runs": runs,
            "median_all_succeeded_s": median([r["all_succeeded_after_s"] for r in runs]),
            "median_payments_per_s": median([r["payments_per_s"] for r in runs]),
            "median_lateness_p50_ms": median([r["lateness_ms"]["p50"] for r in runs]),
            "median_lateness_p99_ms": median([r["lateness_ms"]["p99"] for r in runs]),
            "median_ontime_lateness_p50_ms": median([r["ontime_lateness_ms"]["p50"] for r in runs]),
            "median_ontime_lateness_p99_ms": median([r["ontime_lateness_ms"]["p99"] for r in runs]),
            "median_tick_s": median([r["tick_s"] for r in runs]),
            "complete": all(r["complete"] and not r["overran"] for r in runs),
        }
    return out
