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
  http        the HTTP executor against the stand-in provider answering each charge in 50 ms,
              concurrency 50 and 200: payments/s and its share of the concurrency/50 ms ceiling
  burst       10,000 payments due at the same instant: time until all succeeded, lateness
  processes   the same burst drained by a real `paysched worker --processes K`, K = 1, 2, 4
              (concurrency 50 shared): time until all succeeded, payments/s, ratio to K = 1
  scale       1,000,000 payments due in the future (+ 1,000,000 finished occurrences of history),
              a few due now: cost of one scheduler tick, EXPLAIN of the scheduler's queries
  footprint   peak RSS of a `paysched worker` process, Redis bytes per delayed job, what a
              completed job leaves in Redis
  overhead    bare BullMQ no-op jobs/s vs paysched payments/s with a no-op executor (concurrency
              50, the same Redis, the same run)
  cli         wall time of whole `paysched` processes (--help, stats --json, list --json,
              accounts create, schedule) on a seeded database, 15 times each (5 with --quick):
              median and p90 against the targets for --help and stats
  api         the HTTP API (`paysched serve`) beside the CLI: 1,000 payments created over the
              API (sequential and 10 clients) and by `paysched schedule`; reads at 50 in flight
              (GET /v1/payments/{id}, /v1/payments) and by `paysched show` / `list`
  idle        a `paysched run` process with nothing due (http executor, so the resolver runs
              too): Redis commands (INFO commandstats, its own redis-server), SQL statements
              and write transactions per second over a 20 s window (6 s with --quick)
  export      PostgreSQL only: 1,000,000 occurrences (20,000 with --quick) exported as CSV by
              `paysched export` and by GET /v1/exports/occurrences (curl): time, rows/s, peak
              RSS, and the ratio to psql's COPY of the same rows in the same run

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
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, QUICK, Sizes  # isort: skip
from bench_report import lateness_chart, print_table, strip_values, summary_rows  # isort: skip
from measure_api import bench_api  # isort: skip
from measure_burst import bench_burst  # isort: skip
from measure_footprint import bench_footprint  # isort: skip
from measure_lateness import bench_lateness  # isort: skip
from measure_overhead import bench_overhead  # isort: skip
from measure_scale import bench_scale  # isort: skip
from measure_throughput import bench_throughput  # isort: skip
from measure_cli import bench_cli  # isort: skip
from measure_idle import bench_idle  # isort: skip
from measure_processes import bench_processes  # isort: skip
from measure_http import bench_http  # isort: skip
from measure_export import bench_export  # isort: skip
from bench_harness import MEASUREMENTS, PG_CONNECTION_CAP, RESULTS_DIR, TARGETS  # isort: skip
from common import (  # isort: skip
    DEFAULT_PG_ADMIN_URL,
    PrivateRedis,
    database_version,
    git_revision,
    package_version,
    redis_version,
)

log = logging.getLogger("bench.run")


# -- main -----------------------------------------------------------------------------------------

Bench = Callable[[Ctx], Awaitable[dict[str, Any]]]
BENCHES: dict[str, Bench] = {
    "lateness": bench_lateness,
    "throughput": bench_throughput,
    "http": bench_http,
    "burst": bench_burst,
    "processes": bench_processes,
    "scale": bench_scale,
    "footprint": bench_footprint,
    "overhead": bench_overhead,
    "cli": bench_cli,
    "api": bench_api,
    "idle": bench_idle,
    "export": bench_export,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="paysched benchmark suite: runs each measurement several times, prints "
        "medians, writes bench/results/report.json and lateness.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per measurement (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--burst-runs", type=int, default=None, help="runs of the burst (default: --runs)"
    )
    parser.add_argument(
        "--scale-runs",
        type=int,
        default=1,
        help="runs of the 1M-schedule load (each times several ticks)",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke version (< 2 min)")
    parser.add_argument(
        "--burst-payments",
        type=int,
        default=None,
        help="burst size (default 10,000; 600 with --quick)",
    )
    parser.add_argument(
        "--only",
        default=",".join(MEASUREMENTS),
        help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="bench/results; bench/results/quick with --quick"
    )
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
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _interrupt)
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    started_at = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="paysched-bench-"))
    private = PrivateRedis(tmp / "redis")
    began = time.monotonic()
    try:
        redis_url = private.start()
        ctx = Ctx(
            redis_url=redis_url,
            tmp=tmp,
            pg_admin_url=args.pg_admin_url,
            databases=databases,
            runs=args.runs,
            burst_runs=args.burst_runs or args.runs,
            scale_runs=args.scale_runs,
            sizes=replace(
                QUICK if args.quick else Sizes(),
                **({"burst_payments": args.burst_payments} if args.burst_payments else {}),
            ),
            quick=args.quick,
        )
        environment = {
            "date": started_at.isoformat(timespec="seconds"),
            "command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
            "quick": args.quick,
            "runs": args.runs,
            "burst_runs": ctx.burst_runs,
            "scale_runs": ctx.scale_runs,
            "databases": list(databases),
            "sizes": {k: getattr(ctx.sizes, k) for k in Sizes.__dataclass_fields__},
            "redis": "private redis-server (--save '' --appendonly no)",
            "redis_version": redis_version(redis_url),
            "database_versions": {d: database_version(d, args.pg_admin_url) for d in databases},
            "pg_connection_cap": PG_CONNECTION_CAP,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "packages": {
                n: package_version(n)
                for n in ("paysched", "bullmq", "redis", "SQLAlchemy", "psycopg", "matplotlib")
            },
            "git": git_revision(),
        }
        print(
            f"paysched bench: {', '.join(args.only)} on {', '.join(databases)}; "
            f"{args.runs} run(s){' (quick)' if args.quick else ''}; Redis "
            f"{environment['redis_version']} (private, {redis_url})",
            flush=True,
        )
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
    complete = all("error" not in r and r.get("complete", True) for r in results.values()) and all(
        sub.get("complete", True)
        for r in results.values()
        if "error" not in r
        for sub in r.values()
        if isinstance(sub, dict)
    )
    report = {
        "environment": environment,
        "targets": TARGETS,
        "summary": rows,
        "results": results,
        "all_complete": complete,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report written to {out_dir / 'report.json'} (total {environment['total_s']:.0f}s)")
    if not complete:
        print("WARNING: some run did not complete; see the report", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
