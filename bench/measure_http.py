"""The HTTP executor against a provider answering every charge in 50 ms.

What a real provider's latency leaves of throughput: n payments due now, one tick, the worker
pool (App.run, one process) at concurrency 50 and 200, paying through `paysched.executors.http`
to bench/fast_provider.py (its own process: the provider contract, each charge answered
`succeeded` after 50 ms; the stand-in provider, built for faults, tops out near 100 charges/s
here and would be what is measured). The ceiling is concurrency / 50 ms (1,000/s at 50, 4,000/s
at 200); `of_ceiling` says how much of it paysched reaches.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, insert_payments, median, paysched  # isort: skip
from bench_harness import running, wait_all_final  # isort: skip
from common import stop_process  # isort: skip

from paysched.app import App
from paysched.domain import OccurrenceState
from paysched.executors.base import Executor
from paysched.executors.http import HttpExecutor
from paysched.redis_server import free_port

LATENCY_S = 0.05
CONCURRENCY = (50, 200)


PROVIDER = Path(__file__).resolve().parent / "fast_provider.py"


def wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/payments/probe", timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark provider did not start") from None
            time.sleep(0.05)


async def http_run(ctx: Ctx, kind: str, concurrency: int, n: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, str(PROVIDER), "--port", str(port), "--latency-ms", str(LATENCY_S * 1000)],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_up(url, process)

        def executor(app: App) -> Executor:
            return HttpExecutor(url, "", connections=app.settings.concurrency)

        async with paysched(
            ctx,
            kind,
            f"http{concurrency}",
            concurrency=concurrency,
            executor_factory=executor,
            funds=n,
        ) as app:
            assert app.scheduler is not None
            await app.db(insert_payments, app, [app.clock.now() - timedelta(milliseconds=1)] * n)
            await asyncio.wait_for(app.scheduler.tick(), 300)
            started = app.clock.now()
            async with running(app, scheduler=False):
                ok = await wait_all_final(app, n, timeout_s=max(120.0, n / 5))
            occs = await app.db(app.store.reads.all_occurrences)
    finally:
        stop_process(process)
    finished = [o.finished_at for o in occs if o.finished_at is not None]
    succeeded = sum(1 for o in occs if o.state == OccurrenceState.SUCCEEDED)
    complete = ok and succeeded == n
    exec_s = (max(finished) - started).total_seconds() if finished and complete else None
    rate = round(n / exec_s, 1) if exec_s else None
    ceiling = concurrency / LATENCY_S
    return {
        "database": kind,
        "concurrency": concurrency,
        "payments": n,
        "complete": complete,
        "exec_s": round(exec_s, 3) if exec_s else None,
        "payments_per_s": rate,
        "ceiling_per_s": ceiling,
        "of_ceiling": round(rate / ceiling, 3) if rate else None,
    }


async def bench_http(ctx: Ctx) -> dict[str, Any]:
    n = ctx.sizes.throughput_payments * 2
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        for concurrency in CONCURRENCY:
            runs = []
            for number in range(1, ctx.runs + 1):
                r = await http_run(ctx, kind, concurrency, n)
                print(
                    f"  http {kind} c={concurrency} run {number}: {r['payments_per_s']}/s "
                    f"({r['of_ceiling']} of the {r['ceiling_per_s']:g}/s ceiling)",
                    flush=True,
                )
                runs.append(r)
            out[f"{kind}/{concurrency}"] = {
                "database": kind,
                "concurrency": concurrency,
                "payments": n,
                "runs": runs,
                "latency_ms": LATENCY_S * 1000,
                "median_payments_per_s": median([r["payments_per_s"] for r in runs]),
                "median_of_ceiling": median([r["of_ceiling"] for r in runs]),
                "complete": all(r["complete"] for r in runs),
            }
    return out
