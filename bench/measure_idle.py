"""9. Idle cost: what a `paysched run` process with nothing due asks of Redis and the database.

A real `paysched run` (scheduler, worker pool, notification deliverer and, with the http
executor, the resolver) on a fresh database, its own queue and a redis-server of its own; after
it settled, a fixed window counts
- Redis commands: INFO commandstats before and after (per command; commands run inside Lua
  scripts count too, as Redis counts them; the measurement's own INFO is left out, paysched's
  own INFO calls are counted);
- SQL statements and transactions: counted by the process's own engines (bench/idle_counted.py
  hooks SQLAlchemy's events). A "write transaction" is one not marked read-only: on SQLite a
  BEGIN IMMEDIATE, which takes the database's write lock.
The scheduler ticks once a minute (PAYSCHED_TICK_CRON), so a window may or may not hold a tick.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, median  # isort: skip
from common import PrivateRedis, fresh_database, stop_process  # isort: skip

WRAPPER = Path(__file__).resolve().parent / "idle_counted.py"
SQL_KEYS = ("statements", "write_begins", "commits", "rollbacks")


def _commandstats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def _without_own_info(by_command: dict[str, int]) -> dict[str, int]:
    """paysched's own INFO calls count (its scheduler looks at Redis's run id); the window's
    first INFO is the measurement's own (Redis counts a command after running it, so the
    second is not in the counts it reports)."""
    out = dict(by_command)
    out["info"] = out.get("info", 0) - 1
    return {k: v for k, v in out.items() if v > 0}


def _sql_counts(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def _wait_ready(
    proc: subprocess.Popen[bytes],
    client: redis.Redis,
    queue: str,
    counts: Path,
    timeout_s: float = 60.0,
) -> None:
    """Until the worker's connections show up in CLIENT LIST (BullMQ names them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"paysched run exited with {proc.returncode}")
        names = [str(c.get("name", "")) for c in client.client_list()]
        if counts.exists() and any(queue in n for n in names):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("paysched run did not start within 60 s")


async def idle_run(ctx: Ctx, kind: str, settle_s: float, window_s: float) -> dict[str, Any]:
    run_dir = ctx.tmp / f"idle-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    private = PrivateRedis(run_dir / "redis")
    try:
        redis_url = private.start()
        client = redis.Redis.from_url(redis_url, socket_timeout=10)
        with fresh_database(kind, run_dir, ctx.pg_admin_url) as (db_url, _label):
            counts_file = run_dir / "sql-counts.json"
            queue = f"idle-{secrets.token_hex(4)}"
            env = {
                **{
                    k: v for k, v in os.environ.items() if not k.startswith(("PAYSCHED_", "REDIS_"))
                },
                "REDIS_URL": redis_url,
                "DATABASE_URL": db_url,
                "PAYSCHED_DATA_DIR": str(run_dir),
                "PAYSCHED_EMBEDDED_REDIS": "never",
                "PAYSCHED_QUEUE": queue,
                "PAYSCHED_QUEUE_PREFIX": "paysched-bench",
                # The http executor, so that the resolver runs too; with nothing due it never
                # calls the (absent) provider.
                "PAYSCHED_EXECUTOR": "http",
                "PAYSCHED_PROVIDER_URL": "http://127.0.0.1:9",
                "PAYSCHED_LOG_LEVEL": "WARNING",
                "PAYSCHED_BENCH_SQL_COUNTS": str(counts_file),
            }
            with open(run_dir / "run.log", "wb") as log_file:
                proc = subprocess.Popen(
                    # One process: the counters hook this interpreter, not a group's children.
                    [sys.executable, str(WRAPPER), "run", "--processes", "1"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                )
                try:
                    await _wait_ready(proc, client, queue, counts_file)
                    await asyncio.sleep(settle_s)
                    redis_before, sql_before = _commandstats(client), _sql_counts(counts_file)
                    began = time.monotonic()
                    await asyncio.sleep(window_s)
                    redis_after, sql_after = _commandstats(client), _sql_counts(counts_file)
                    elapsed = time.monotonic() - began
                    if proc.poll() is not None:
                        raise RuntimeError(f"paysched run exited with {proc.returncode}")
                finally:
                    stop_process(proc)
        client.close()
    finally:
        private.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    by_command = _without_own_info(
        {name: redis_after[name] - redis_before.get(name, 0) for name in redis_after}
    )
    # The SQL counters are snapshots taken every 0.2 s: rate over their own timestamps.
    sql_span = sql_after["monotonic"] - sql_before["monotonic"]
    sql = {k: sql_after[k] - sql_before[k] for k in SQL_KEYS}
    redis_total = sum(by_command.values())
    return {
        "database": kind,
        "window_s": round(elapsed, 2),
        "redis_commands": redis_total,
        "redis_commands_per_s": round(redis_total / elapsed, 2),
        "redis_by_command": dict(sorted(by_command.items(), key=lambda kv: -kv[1])),
        "sql": sql,
        "sql_window_s": round(sql_span, 2),
        "sql_statements_per_s": round(sql["statements"] / sql_span, 2),
        "write_transactions_per_s": round(sql["write_begins"] / sql_span, 2),
        "commits_per_s": round(sql["commits"] / sql_span, 2),
    }


async def bench_idle(ctx: Ctx) -> dict[str, Any]:
    settle_s = 2.0 if ctx.quick else 5.0
    window_s = ctx.sizes.idle_window_s
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        runs = []
        for number in range(1, ctx.runs + 1):
            r = await idle_run(ctx, kind, settle_s, window_s)
            print(
                f"  idle {kind} run {number}: {r['redis_commands_per_s']} Redis commands/s "
                f"({', '.join(f'{k} {v}' for k, v in list(r['redis_by_command'].items())[:5])}"
                f"), {r['sql_statements_per_s']} SQL statements/s, "
                f"{r['write_transactions_per_s']} write transactions/s",
                flush=True,
            )
            runs.append(r)
        out[kind] = {
            "runs": runs,
            "window_s": window_s,
            "median_redis_commands_per_s": median([r["redis_commands_per_s"] for r in runs]),
            "median_sql_statements_per_s": median([r["sql_statements_per_s"] for r in runs]),
            "median_write_transactions_per_s": median(
                [r["write_transactions_per_s"] for r in runs]
            ),
        }
    return out
