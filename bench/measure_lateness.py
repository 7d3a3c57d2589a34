"""1. Start lateness of payments due over a minute (bench/lateness.py's runs)."""

from __future__ import annotations

import random
import secrets
from dataclasses import replace
from typing import Any

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
import lateness  # isort: skip
from bench_harness import Ctx, median  # isort: skip


# -- 1. lateness ----------------------------------------------------------------------------------


async def bench_lateness(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        plan = lateness.Plan(
            payments=ctx.sizes.lateness_payments,
            window_s=ctx.sizes.lateness_window_s,
            lead_s=lateness.MIN_LEAD_S,
            concurrency=50,
            database=kind,
            pg_admin_url=ctx.pg_admin_url,
            create_threads=1 if kind == "sqlite" else 8,
        )
        per_payment = await lateness.calibrate(plan, ctx.redis_url, ctx.tmp)
        plan = replace(plan, lead_s=lateness.auto_lead(plan, per_payment))
        rng = random.Random(secrets.randbits(32))
        runs = []
        for number in range(1, ctx.runs + 1):
            result = await lateness.one_run(number, plan, ctx.redis_url, ctx.tmp, rng)
            lat = result["lateness_ms"]
            print(
                f"  lateness {kind} run {number}: p50 {lat['p50']} p95 {lat['p95']} "
                f"p99 {lat['p99']} max {lat['max']} ms ({result['states']})",
                flush=True,
            )
            runs.append(result)
        out[kind] = {
            "payments": plan.payments,
            "window_s": plan.window_s,
            "concurrency": 50,
            "lead_s": plan.lead_s,
            "runs": runs,
            "median_ms": {
                m: median([r["lateness_ms"][m] for r in runs])
                for m in ("p50", "p95", "p99", "max", "mean")
            },
            "complete": all(r["complete"] and not r["creation_overran"] for r in runs),
        }
    return out
