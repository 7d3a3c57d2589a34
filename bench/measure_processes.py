"""Every core: a burst drained by `paysched worker --processes K`, K = 1, 2, 4, and by three
separate `paysched worker` commands (as three hosts).

The payments are stored and enqueued (delayed, due at one instant T) by this process as in the
burst measurement; then a real `paysched worker --processes K` — the supervisor and its K
children, the command a user runs — starts before T and drains them, concurrency 50 in total
(shared by its processes), with the ledger executor (every payment moves money from one payer
account, whose row serialises them) and with a no-op executor (what the worker itself costs).
Measured: seconds from T until every payment succeeded, payments/s,
and the ratio of each K to K = 1 in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, insert_payments, median, paysched, wait_all_final  # isort: skip
from common import stop_process, summarise  # isort: skip

from paysched.domain import OccurrenceState
from paysched.supervisor import shares
from paysched.views import lateness_ms

PROCESSES = (1, 2, 4)
CONCURRENCY = 50


BENCH_DIR = Path(__file__).resolve().parent
EXECUTORS = {"ledger": "ledger", "noop": "bench_harness:noop_executor"}


def worker_env(app: Any, executor: str) -> dict[str, str]:
    cfg = app.settings
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    return os.environ | {
        "PAYSCHED_EXECUTOR": EXECUTORS[executor],
        "PYTHONPATH": path,
        "REDIS_URL": app.redis_url,
        "DATABASE_URL": cfg.database_url,
        "PAYSCHED_DATA_DIR": str(cfg.data_dir),
        "PAYSCHED_EMBEDDED_REDIS": "never",
        "PAYSCHED_QUEUE": cfg.queue_name,
        "PAYSCHED_QUEUE_PREFIX": cfg.queue_prefix,
        "PAYSCHED_CONCURRENCY": str(CONCURRENCY),
        "PAYSCHED_LOG_LEVEL": "WARNING",
        "PAYSCHED_SHUTDOWN_GRACE": "15s",
    }


async def drain_run(
    ctx: Ctx, kind: str, n: int, processes: int, executor: str, groups: int = 1
) -> dict[str, Any]:
    """`groups` separate `paysched worker --processes K` commands, each with its own share of
    the concurrency and data dir, as on separate hosts."""
    tag = f"procs{groups}x{processes}"
    async with paysched(ctx, kind, tag, concurrency=CONCURRENCY, funds=n) as app:
        assert app.scheduler is not None
        # Enough lead for the tick (~1 ms a payment) and the group's start (~2 s).
        lead_s = 8.0 + n / 1000
        due = (app.clock.now() + timedelta(seconds=lead_s)).replace(microsecond=0)
        await app.db(insert_payments, app, [due] * n)
        await app.scheduler.tick()
        running = [
            subprocess.Popen(
                [sys.executable, "-m", "paysched", "worker", "--processes", str(processes)],
                env=worker_env(app, executor)
                | {
                    "PAYSCHED_CONCURRENCY": str(share),
                    "PAYSCHED_DATA_DIR": str(app.settings.data_dir / f"host-{i}"),
                },
                stdin=subprocess.DEVNULL,
            )
            for i, share in enumerate(shares(CONCURRENCY, groups))
        ]
        try:
            margin_s = (due - app.clock.now()).total_seconds()
            ok = await wait_all_final(app, n, timeout_s=max(margin_s, 0) + 600)
        finally:
            began = time.monotonic()
            for group in running:
                stop_process(group)
            stop_s = time.monotonic() - began
        occs = await app.db(app.store.reads.all_occurrences)
        late = [v for o in occs if (v := lateness_ms(o)) is not None]
        finished = [o.finished_at for o in occs if o.finished_at is not None]
        succeeded = sum(1 for o in occs if o.state == OccurrenceState.SUCCEEDED)
        codes = [group.returncode for group in running]
        complete = ok and succeeded == n and codes == [0] * groups
        all_s = (max(finished) - due).total_seconds() if finished and complete else None
        return {
            "database": kind,
            "executor": executor,
            "payments": n,
            "groups": groups,
            "processes": processes,
            "concurrency": CONCURRENCY,
            "complete": complete,
            "exit_codes": codes,
            "stop_s": round(stop_s, 2),
            "first_due_margin_s": round(margin_s, 3),
            "all_succeeded_after_s": round(all_s, 3) if all_s else None,
            "payments_per_s": round(n / all_s, 1) if all_s else None,
            "lateness_ms": summarise(late),
        }


async def bench_processes(ctx: Ctx) -> dict[str, Any]:
    n = ctx.sizes.burst_payments
    out: dict[str, Any] = {}
    # --quick: one executor and 1 or 2 processes, to prove the path, not the scaling.
    executors = ["noop"] if ctx.quick else list(EXECUTORS)
    # (groups, processes per group): one command on every core, and three separate commands
    # of one process each, as three hosts would run them against one database and Redis.
    layouts = [(1, k) for k in (PROCESSES[:2] if ctx.quick else PROCESSES)]
    if not ctx.quick:
        layouts.append((3, 1))
    for kind, executor in [(k, e) for k in ctx.databases for e in executors]:
        by_k: dict[str, Any] = {}
        for groups, k in layouts:
            label = str(k) if groups == 1 else f"{groups} groups x {k}"
            runs = []
            for number in range(1, ctx.burst_runs + 1):
                r = await drain_run(ctx, kind, n, k, executor, groups)
                print(
                    f"  processes {kind} {executor} {label} run {number}: {n} payments after "
                    f"{r['all_succeeded_after_s']}s ({r['payments_per_s']}/s), lateness p99 "
                    f"{r['lateness_ms']['p99']} ms, complete {r['complete']}",
                    flush=True,
                )
                runs.append(r)
            by_k[label] = {
                "runs": runs,
                "median_all_succeeded_s": median([r["all_succeeded_after_s"] for r in runs]),
                "median_payments_per_s": median([r["payments_per_s"] for r in runs]),
                "complete": all(r["complete"] for r in runs),
            }
        one = by_k["1"]["median_payments_per_s"]
        for entry in by_k.values():
            rate = entry["median_payments_per_s"]
            entry["vs_one_process"] = round(rate / one, 2) if rate and one else None
        out[f"{kind}/{executor}"] = {
            "database": kind,
            "executor": executor,
            "payments": n,
            "concurrency": CONCURRENCY,
            "by_processes": by_k,
            "complete": all(b["complete"] for b in by_k.values()),
        }
    return out
