#!/usr/bin/env python3
"""Start lateness of scheduled payments, end to end, under real conditions.

Each run opens paysched on a fresh database (a temporary SQLite file, or a throw-away PostgreSQL
database) and a fresh queue, creates N one-time payments due at uniformly random instants over a
window that opens a few seconds later, runs the scheduler and the worker pool (`App.run`) until
every occurrence is final and reports, per occurrence, how late it started:
`started_at - due_at` (paysched.views.lateness_ms).

Redis is a private `redis-server` on a free port (no persistence) that the bench starts and stops
itself, unless --redis-url names one; the bench then only touches its own queue's keys.

    python bench/lateness.py                                  # 2000 payments / 60 s, 3 runs
    python bench/lateness.py --payments 300 --window 10 --runs 2 --database postgresql
    python bench/lateness.py --payments 300 --window 10 --runs 2 --no-waker

The JSON report (default bench/results/lateness.json) holds every run and the medians across
runs, plus the environment (Redis version, database, concurrency, waker on/off, date).

Payments are stored through Payments.create_payment and then enqueued with one
Scheduler.schedule_now (app.create_payment, one at a time, is too slow for thousands); the worker
pool and scheduler (`App.run`) start right after. A short calibration on a throw-away database
first warms everything up and times creation, and the due window opens --lead seconds after
creation starts: 3 s, or more when creating N payments would not fit in 3 s.

Exit status: 0 when in every run all payments succeeded and creation finished before the first
was due; 1 otherwise; 130 when interrupted (Ctrl-C or SIGTERM; cleanup still happens).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from paysched.app import App
from paysched.clock import to_ms
from paysched.config import Settings
from paysched.domain import FINAL_STATES, OccurrenceState
from paysched.executors.base import Executor
from paysched.executors.ledger import LedgerExecutor
from paysched.queue import waker as paysched_waker
from paysched.views import lateness_ms

# Run as a script, bench/ is on sys.path: the shared helpers live next to this file.
from common import (  # isort: skip
    DEFAULT_PG_ADMIN_URL,
    ROOT,
    PrivateRedis,
    database_version,
    fresh_database,
    git_revision,
    median_of,
    package_version,
    redis_version,
    summarise,
)

log = logging.getLogger("bench.lateness")

DEFAULT_OUT = ROOT / "bench" / "results" / "lateness.json"
TICK_CRON = "*/5 * * * * *"  # 6 fields, seconds first: every five seconds
CURRENCY = "USD"
AMOUNT = 1  # minor units per payment
METRICS = ("p50", "p95", "p99", "max")
MIN_LEAD_S = 3.0
SLOW_MS = 50  # the p99 target


# -- one run -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    payments: int
    window_s: float
    lead_s: float
    concurrency: int
    database: str
    pg_admin_url: str
    create_threads: int
    poll_s: float = 0.25


def ledger_executor(app: App) -> Executor:
    return LedgerExecutor(app.store, app.clock, app.pool)


def build_settings(plan: Plan, redis_url: str, database_url: str, data_dir: Path) -> Settings:
    queue = f"lateness-{secrets.token_hex(5)}"
    base = Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "PAYSCHED_DATA_DIR": str(data_dir),
            "PAYSCHED_EMBEDDED_REDIS": "never",
            "PAYSCHED_QUEUE": queue,
            "PAYSCHED_QUEUE_PREFIX": "paysched-bench",
            "PAYSCHED_CONCURRENCY": str(plan.concurrency),
            "PAYSCHED_TICK_CRON": TICK_CRON,
            "PAYSCHED_LOG_LEVEL": "WARNING",
        }
    )
    # Everything the run creates must fall inside the look-ahead, so every occurrence is
    # enqueued as a delayed job at creation (or at the latest at the next tick).
    horizon = timedelta(seconds=plan.lead_s + plan.window_s + 120)
    return base.with_overrides(lookahead=horizon, shutdown_grace=timedelta(seconds=15))


def store_payments(app: App, due_times: Sequence[datetime]) -> list[int]:
    """Store payments (blocking; runs in a creation thread). Enqueueing is done afterwards."""
    ids = []
    for due in due_times:
        payment = app.store.payments.create_payment(
            payer="bench-payer",
            payee="bench-payee",
            amount=AMOUNT,
            currency=CURRENCY,
            due_at=due,
            cron=None,
            timezone=None,
            memo="lateness bench",
            now=app.clock.now(),
        )
        ids.append(payment.id)
    return ids


async def open_app(plan: Plan, redis_url: str, database_url: str, data_dir: Path) -> App:
    """paysched on the given database and a queue of its own, with two funded accounts."""
    settings = build_settings(plan, redis_url, database_url, data_dir)
    app = await App.open(settings, executor_factory=ledger_executor)
    try:
        now = app.clock.now()
        await app.db(app.store.accounts.create_account, "bench-payer", CURRENCY, now)
        await app.db(app.store.accounts.create_account, "bench-payee", CURRENCY, now)
        await app.db(app.store.accounts.deposit, "bench-payer", AMOUNT * plan.payments, now)
    except BaseException:
        await app.close()
        raise
    return app


async def close_app(app: App) -> None:
    if app.queue is not None:
        with contextlib.suppress(Exception):
            await app.queue.obliterate()  # only this run's queue: its name is unique
    await app.close()


async def create_and_schedule(
    app: App, plan: Plan, due_times: Sequence[datetime]
) -> tuple[list[int], float]:
    """Store the payments, then enqueue them. Returns (payment ids, seconds spent storing).

    app.create_payment stores and enqueues one payment per call (several round trips each); for
    thousands that would not finish before the first is due. The bench stores them in creation
    threads, then enqueues them all with one schedule_now, the path app.create_payment takes.
    """
    assert app.scheduler is not None
    began = time.monotonic()
    chunks = [list(due_times[i :: plan.create_threads]) for i in range(plan.create_threads)]
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(plan.create_threads, "bench-create") as creators:
        created = await asyncio.gather(
            *(loop.run_in_executor(creators, store_payments, app, c) for c in chunks if c)
        )
    stored_s = time.monotonic() - began
    payment_ids = sorted(pid for ids in created for pid in ids)
    await app.scheduler.schedule_now(payment_ids)
    return payment_ids, stored_s


async def calibrate(plan: Plan, redis_url: str, tmp: Path) -> float:
    """Warm up (imports, connections, BullMQ's scripts) and time storing + enqueueing a sample
    of payments on a throw-away database and queue. Returns seconds per payment."""
    sample = min(plan.payments, 200)
    run_dir = tmp / "calibration"
    run_dir.mkdir(parents=True, exist_ok=True)
    with fresh_database(plan.database, run_dir, plan.pg_admin_url) as (db_url, _):
        app = await open_app(plan, redis_url, db_url, run_dir)
        try:
            # Due inside the look-ahead (so they are enqueued too) but never run: no worker.
            due = app.clock.now() + timedelta(seconds=60)
            due_times = [due + timedelta(milliseconds=i) for i in range(sample)]
            began = time.monotonic()
            await create_and_schedule(app, plan, due_times)
            return (time.monotonic() - began) / sample
        finally:
            await close_app(app)


def auto_lead(plan: Plan, per_payment_s: float) -> float:
    """Lead time from creation start to window start: at least MIN_LEAD_S, and enough for the
    estimated creation time with room to spare (the service's tick may contend)."""
    return round(max(MIN_LEAD_S, 1.5 * per_payment_s * plan.payments + 1.0), 1)


async def one_run(
    number: int, plan: Plan, redis_url: str, tmp: Path, rng: random.Random
) -> dict[str, Any]:
    run_dir = tmp / f"run-{number}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with fresh_database(plan.database, run_dir, plan.pg_admin_url) as (db_url, db_label):
        app = await open_app(plan, redis_url, db_url, run_dir)
        runner: asyncio.Task[None] | None = None
        stop = asyncio.Event()
        try:
            began = time.monotonic()
            start = app.clock.now() + timedelta(seconds=plan.lead_s)
            offsets = sorted(rng.uniform(0, plan.window_s) for _ in range(plan.payments))
            due_times = [start + timedelta(seconds=s) for s in offsets]
            first_due_mono = began + plan.lead_s + offsets[0]

            payment_ids, stored_s = await create_and_schedule(app, plan, due_times)
            creation_s = time.monotonic() - began

            # Then the service: worker pool and scheduler (ticking every 5 s), as `paysched run`.
            runner = asyncio.create_task(app.run(stop))
            await asyncio.sleep(0.2)
            if runner.done():
                runner.result()  # raises what stopped it
            margin_s = first_due_mono - time.monotonic()
            if margin_s < 0:
                log.warning(
                    "run %s: creation took %.2fs and the service started %.2fs after the first "
                    "due time; raise --lead",
                    number,
                    creation_s,
                    -margin_s,
                )

            deadline = began + plan.lead_s + plan.window_s + 60
            final = 0
            timed_out = False
            while True:
                if runner.done():
                    runner.result()
                    raise RuntimeError("app.run returned before stop was set")
                counts = await app.db(app.store.reads.occurrence_counts)
                final = sum(counts[s.value] for s in FINAL_STATES)
                if final >= plan.payments:
                    break
                if time.monotonic() >= deadline:
                    timed_out = True
                    log.warning("run %s: timed out with %s/%s final", number, final, plan.payments)
                    break
                await asyncio.sleep(plan.poll_s)
            finished_s = time.monotonic() - began

            stop.set()
            await runner
            runner = None

            occs = await app.db(app.store.reads.all_occurrences, payment_ids)
            ledger = await app.db(app.store.accounts.ledger_report)
            late = [v for o in occs if (v := lateness_ms(o)) is not None]
            # The late tail, with where each due time fell within the scheduler's 5 s tick
            # period (0 = at a tick): a tail clustered at small phases is the tick's doing.
            tail = sorted(
                (
                    (v, to_ms(o.due_at) % 5000)
                    for o in occs
                    if (v := lateness_ms(o)) is not None and v > SLOW_MS
                ),
                reverse=True,
            )[:100]
            by_state = {s.value: sum(1 for o in occs if o.state == s) for s in OccurrenceState}
            return {
                "run": number,
                "database": db_label if plan.database == "postgresql" else "sqlite (temp file)",
                "queue": app.settings.queue_name,
                "payments": plan.payments,
                "occurrences": len(occs),
                "states": {k: v for k, v in by_state.items() if v},
                "retried": sum(1 for o in occs if o.attempts > 1),
                "not_started": plan.payments - len(late),
                "timed_out": timed_out,
                "complete": not timed_out and by_state["succeeded"] == plan.payments,
                "ledger_balanced": ledger.balanced,
                "ledger_problems": ledger.problems,
                "store_s": round(stored_s, 3),
                "creation_s": round(creation_s, 3),
                "first_due_margin_s": round(margin_s, 3),
                "creation_overran": margin_s < 0,
                "finished_after_s": round(finished_s, 3),
                "lateness_ms": summarise(late),
                # Every value, for charts (bench/run.py); bench/lateness.py leaves it out of its
                # report.
                "lateness_values_ms": late,
                f"starts_later_than_{SLOW_MS}ms": [
                    {"lateness_ms": v, "due_phase_in_tick_period_ms": phase} for v, phase in tail
                ],
            }
        finally:
            stop.set()
            if runner is not None:
                with contextlib.suppress(Exception):
                    await runner
            await close_app(app)


# -- reporting -----------------------------------------------------------------------------------


def fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def print_run(run: dict[str, Any], total: int) -> None:
    lat = run["lateness_ms"]
    states = ", ".join(f"{n} {s}" for s, n in run["states"].items())
    print(
        f"run {run['run']}/{total}: {run['payments']} payments ({states}); "
        f"created+enqueued in {run['creation_s']:.2f}s, first due {run['first_due_margin_s']:.2f}s "
        f"later; all final after {run['finished_after_s']:.1f}s\n"
        f"  lateness ms: p50 {fmt(lat['p50'])}  p95 {fmt(lat['p95'])}  p99 {fmt(lat['p99'])}  "
        f"max {fmt(lat['max'])}  (min {fmt(lat['min'])}, mean {fmt(lat['mean'])})",
        flush=True,
    )


def print_table(runs: Sequence[dict[str, Any]], medians: dict[str, float | None]) -> None:
    header = f"{'start lateness (ms)':<22}" + "".join(f"{m:>10}" for m in METRICS)
    print("\n" + header)
    print("-" * len(header))
    for run in runs:
        lat = run["lateness_ms"]
        print(f"{'run ' + str(run['run']):<22}" + "".join(f"{fmt(lat[m]):>10}" for m in METRICS))
    print("-" * len(header))
    print(f"{'median of runs':<22}" + "".join(f"{fmt(medians[m]):>10}" for m in METRICS))


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure how late scheduled payments start (started_at - due_at).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--payments", type=int, default=2000, help="payments per run")
    parser.add_argument("--window", type=float, default=60.0, help="seconds the due times span")
    parser.add_argument("--runs", type=int, default=3, help="independent runs")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis (only the bench's own queue keys are touched); default: start a "
        "private redis-server on a free port",
    )
    parser.add_argument("--concurrency", type=int, default=50, help="worker concurrency")
    parser.add_argument(
        "--no-waker",
        action="store_true",
        help="disable paysched.queue.waker.DelayWaker (workers rely on BullMQ's own blocking wait)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument(
        "--lead",
        type=float,
        default=None,
        help="seconds from the start of creation to the start of the due window; default: "
        f"{MIN_LEAD_S:g}, or more if a calibration says creating the payments takes longer",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=DEFAULT_PG_ADMIN_URL,
        help="PostgreSQL maintenance database; the bench creates and drops its own next to it",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for the due times")
    args = parser.parse_args(argv)
    if args.payments < 1 or args.runs < 1 or args.concurrency < 1:
        parser.error("--payments, --runs and --concurrency must be at least 1")
    if args.window <= 0 or (args.lead is not None and args.lead < 0):
        parser.error("--window must be positive and --lead not negative")
    return args


async def bench(
    plan: Plan, runs: int, lead: float | None, redis_url: str, tmp: Path, seed: int
) -> tuple[Plan, float, list[dict[str, Any]]]:
    """Calibrate (and warm up), fix the lead, then the runs. Returns (plan, s/payment, runs)."""
    # SIGTERM cancels the bench like Ctrl-C does, so every run's cleanup still happens.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    per_payment_s = await calibrate(plan, redis_url, tmp)
    plan = replace(plan, lead_s=lead if lead is not None else auto_lead(plan, per_payment_s))
    print(
        f"calibration: {per_payment_s * 1000:.2f} ms to store + enqueue one payment "
        f"(~{per_payment_s * plan.payments:.1f}s for {plan.payments}); due window opens "
        f"{plan.lead_s:g}s after creation starts",
        flush=True,
    )
    rng = random.Random(seed)
    results: list[dict[str, Any]] = []
    for number in range(1, runs + 1):
        result = await one_run(number, plan, redis_url, tmp, rng)
        print_run(result, runs)
        results.append(result)
    return plan, per_payment_s, results


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # SIGTERM takes the same way out as Ctrl-C, so redis-server is stopped and the database
    # dropped (while the event loop runs, bench() routes it to a task cancel instead).
    signal.signal(signal.SIGTERM, _interrupt)

    if args.no_waker:
        # Bench-only monkeypatch: the WorkerPool still creates and stops its DelayWaker, but
        # the waker never runs.
        paysched_waker.DelayWaker.start = lambda self: None  # type: ignore[method-assign]

    seed = args.seed if args.seed is not None else secrets.randbits(32)
    plan = Plan(
        payments=args.payments,
        window_s=args.window,
        lead_s=args.lead if args.lead is not None else MIN_LEAD_S,
        concurrency=args.concurrency,
        database=args.database,
        pg_admin_url=args.pg_admin_url,
        # SQLite serialises writers anyway; PostgreSQL stores payments in parallel.
        create_threads=1 if args.database == "sqlite" else 8,
    )
    started_at = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="paysched-bench-"))
    private: PrivateRedis | None = None
    try:
        if args.redis_url:
            redis_url = args.redis_url
        else:
            private = PrivateRedis(tmp / "redis")
            redis_url = private.start()
        environment = {
            "date": started_at.isoformat(timespec="seconds"),
            "redis": "private redis-server" if private else "external (--redis-url)",
            "redis_version": redis_version(redis_url),
            "database": args.database,
            "database_version": database_version(args.database, args.pg_admin_url),
            "concurrency": args.concurrency,
            "payments": args.payments,
            "window_s": args.window,
            "runs": args.runs,
            "waker": not args.no_waker,
            "tick_cron": TICK_CRON,
            "seed": seed,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "packages": {
                name: package_version(name)
                for name in ("paysched", "bullmq", "redis", "SQLAlchemy", "psycopg")
            },
            "git": git_revision(),
        }
        print(
            f"lateness bench: {args.runs} run(s) x {args.payments} payments over "
            f"{args.window:g}s, {args.database} ({environment['database_version']}), Redis "
            f"{environment['redis_version']}, concurrency {args.concurrency}, waker "
            f"{'on' if environment['waker'] else 'OFF'}",
            flush=True,
        )
        plan, per_payment_s, runs = asyncio.run(
            bench(plan, args.runs, args.lead, redis_url, tmp, seed)
        )
        environment["lead_s"] = plan.lead_s
        environment["lead"] = "given (--lead)" if args.lead is not None else "auto"
        environment["calibration_ms_per_payment"] = round(per_payment_s * 1000, 3)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        if private is not None:
            private.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    medians = {m: median_of(runs, m) for m in (*METRICS, "mean", "min")}
    print_table(runs, medians)
    for run in runs:
        run.pop("lateness_values_ms", None)
    report = {
        "environment": environment,
        "runs": runs,
        "median_lateness_ms": medians,
        "all_complete": all(r["complete"] for r in runs),
        "all_valid": all(r["complete"] and not r["creation_overran"] for r in runs),
    }
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport written to {out}")
    if not report["all_complete"]:
        print("WARNING: not every payment succeeded; see the report", file=sys.stderr)
    if any(r["creation_overran"] for r in runs):
        print(
            "WARNING: creation overran the first due time in some run; its early payments "
            "were enqueued late. Use a larger --lead",
            file=sys.stderr,
        )
    return 0 if report["all_valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
