#!/usr/bin/env python3
"""What one payment asks of the database and of Redis, counted (issue 20 item 2).

    python bench/count_roundtrips.py --database sqlite --payments 2000
    python bench/count_roundtrips.py --database postgresql --executor ledger

n payments due now on a fresh database and a private redis-server, one scheduler tick, then the
worker pool (concurrency 50) until all are final, as bench/measure_throughput.py runs them.
Counted over the worker phase only (the tick and the setup are left out):
- SQL: statements sent by the process's engines (an executemany counts once: one call of the
  driver), transactions (BEGIN) and commits, from SQLAlchemy's events;
- Redis: INFO commandstats before and after, per command (commands inside Lua scripts count
  too, as Redis counts them); `scripts` is EVALSHA + EVAL calls, i.e. client round trips for
  BullMQ's scripts.
Printed per payment, with payments/s of the run (which the counting slows a little).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.engine import Engine

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, QUICK, insert_payments, paysched, running, wait_all_final  # isort: skip
from common import DEFAULT_PG_ADMIN_URL, PrivateRedis  # isort: skip
from measure_overhead import bare_bullmq_run  # isort: skip

COUNTS = {"statements": 0, "begins": 0, "commits": 0}
KINDS: Counter[str] = Counter()  # statements by their first words and table
_lock = threading.Lock()


def _kind(statement: str) -> str:
    words = " ".join(statement.split()).split(" ")
    verb = words[0].upper()
    table = ""
    for marker in ("FROM", "INTO", "UPDATE"):
        if marker in words[:-1] and not table:
            table = words[words.index(marker) + 1]
    return f"{verb} {table}".strip()


@event.listens_for(Engine, "before_cursor_execute")
def _statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    with _lock:
        COUNTS["statements"] += 1
        KINDS[_kind(statement)] += 1


@event.listens_for(Engine, "begin")
def _begin(_conn: Any) -> None:
    with _lock:
        COUNTS["begins"] += 1


@event.listens_for(Engine, "commit")
def _commit(_conn: Any) -> None:
    with _lock:
        COUNTS["commits"] += 1


def _commandstats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in info.items()
        if name != "cmdstat_info"
    }


async def count_bare(ctx: Ctx, n: int) -> dict[str, Any]:
    """The same counts for bare BullMQ no-op jobs (bench/measure_overhead.py's reference)."""
    client = redis.Redis.from_url(ctx.redis_url)
    redis0, cpu0 = _commandstats(client), time.process_time()
    run = await bare_bullmq_run(ctx, n)
    cpu, redis1 = time.process_time() - cpu0, _commandstats(client)
    client.close()
    commands = {k: redis1.get(k, 0) - redis0.get(k, 0) for k in redis1}
    # Its adds and its obliterate are in the window too: count only what the worker sends.
    scripts = commands.get("evalsha", 0) + commands.get("eval", 0)
    return {
        "database": "-",
        "executor": "bare BullMQ",
        "payments": n,
        "complete": run["complete"],
        "payments_per_s": run["jobs_per_s"],
        "per_payment": {
            "cpu_ms (incl. adds)": round(1000 * cpu / n, 3),
            "redis_commands (incl. adds)": round(sum(commands.values()) / n, 3),
            "redis_round_trips_scripts (incl. adds)": round(scripts / n, 3),
        },
        "sql_statements": {},
    }


async def count(ctx: Ctx, kind: str, executor: str, n: int) -> dict[str, Any]:
    client = redis.Redis.from_url(ctx.redis_url)
    async with paysched(ctx, kind, "rt", concurrency=50, executor=executor, funds=n) as app:
        assert app.scheduler is not None
        await app.db(insert_payments, app, [app.clock.now() - timedelta(milliseconds=1)] * n)
        await asyncio.wait_for(app.scheduler.tick(), 300)
        sql0, kinds0, redis0 = dict(COUNTS), Counter(KINDS), _commandstats(client)
        began, cpu0 = time.monotonic(), time.process_time()
        async with running(app, scheduler=False):
            ok = await wait_all_final(app, n, timeout_s=max(120.0, n / 5))
            elapsed, cpu = time.monotonic() - began, time.process_time() - cpu0
            sql1, kinds1, redis1 = dict(COUNTS), Counter(KINDS), _commandstats(client)
    client.close()
    commands = {k: redis1.get(k, 0) - redis0.get(k, 0) for k in redis1}
    commands = {k: v for k, v in sorted(commands.items(), key=lambda kv: -kv[1]) if v}
    scripts = commands.get("evalsha", 0) + commands.get("eval", 0)
    return {
        "database": kind,
        "executor": executor,
        "payments": n,
        "complete": ok,
        "payments_per_s": round(n / elapsed, 1),
        "per_payment": {
            "cpu_ms": round(1000 * cpu / n, 3),
            "sql_statements": round((sql1["statements"] - sql0["statements"]) / n, 3),
            "sql_transactions": round((sql1["begins"] - sql0["begins"]) / n, 3),
            "redis_commands": round(sum(commands.values()) / n, 3),
            "redis_round_trips_scripts": round(scripts / n, 3),
        },
        "sql_statements": {k: round(v / n, 3) for k, v in (kinds1 - kinds0).most_common()},
        "redis_commands": {k: round(v / n, 3) for k, v in commands.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--executor", default="noop,ledger", help="comma-separated")
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--bare", action="store_true", help="also bare BullMQ no-op jobs")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args()
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    tmp = Path(tempfile.mkdtemp(prefix="paysched-rt-"))
    private = PrivateRedis(tmp / "redis")
    try:
        ctx = Ctx(
            redis_url=private.start(),
            tmp=tmp,
            pg_admin_url=args.pg_admin_url,
            databases=databases,
            runs=1,
            burst_runs=1,
            scale_runs=1,
            sizes=QUICK,
            quick=True,
        )

        async def all_counts() -> list[dict[str, Any]]:
            out = [await count_bare(ctx, args.payments)] if args.bare else []
            for kind in databases:
                for executor in args.executor.split(","):
                    out.append(await count(ctx, kind, executor, args.payments))
            return out

        for result in asyncio.run(all_counts()):
            print(json.dumps(result))
    finally:
        private.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
