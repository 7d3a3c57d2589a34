"""`paysched demo`: about 50 payments over about 20 seconds, with permanent failures and
transient ones, on a fresh demo database; ends with a summary and a ledger check.

`--executor http` pays through the stand-in provider instead (started in this process, with
its own ledger): declines, timeouts after committing, dropped answers, pending charges and
failing lookups hit some requests; the unknown outcomes are resolved by asking it, and the
summary checks its ledger against paysched's (one succeeded charge per succeeded payment)."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import sys
import time
from datetime import timedelta
from statistics import quantiles
from typing import Any

from paysched.actors import Actor
from paysched.app import App, default_executor
from paysched.config import Settings
from paysched.domain import FINAL_STATES, OccurrenceState
from paysched.executors.flaky import FlakyExecutor, memo_failures
from paysched.executors.ledger import LedgerExecutor
from paysched.standin import StandinProvider
from paysched.views import lateness_ms

log = logging.getLogger("paysched.demo")
S = OccurrenceState


def demo_settings(base: Settings) -> Settings:
    """The demo keeps the user's Redis choice but never touches their data: its own SQLite file
    and its own queue, with short retry delays so retries finish within the run."""
    db_path = base.data_dir / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    return base.with_overrides(
        database_url=f"sqlite:///{db_path}",
        queue_name=f"{base.queue_name}-demo",
        tick_cron="*/2 * * * * *",
        lookahead=timedelta(minutes=1),
        backoff_ms=500,
        lock_ms=10_000,
        concurrency=max(base.concurrency, 3),
    )


# The stand-in's faults in the http demo: per request, seeded (the same run every time).
STANDIN_RATES = {
    "decline": 0.04,
    "timeout_after": 0.04,
    "drop_after": 0.04,
    "error_after": 0.03,
    "pending": 0.08,
    "slow": 0.05,
    "lookup_error": 0.1,
}
STANDIN_BALANCES = {"alice": "10000.00", "bob": "5000.00", "carol": "10.00", "dave": "0.00"}


def with_standin(cfg: Settings, provider: StandinProvider, token: str) -> Settings:
    return cfg.with_overrides(
        executor="http",
        provider_url=provider.url,
        provider_token=token,
        provider_timeout=timedelta(seconds=1),
        resolve_max_interval=timedelta(seconds=2),
    )


def percentile(values: list[int], p: int) -> int:
    if not values:
        return 0
    if len(values) == 1:
        return values[0]
    return round(quantiles(values, n=100, method="inclusive")[p - 1])


async def _demo(
    cfg: Settings, count: int, seconds: float, quiet: bool, provider: StandinProvider | None
) -> dict[str, Any]:
    rng = random.Random(7)
    app = await App.open(
        cfg,
        executor_factory=default_executor
        if provider
        else lambda a: FlakyExecutor(LedgerExecutor(a.store, a.clock, a.pool), memo_failures),
    )
    assert app.queue is not None
    # Whoever runs the demo schedules its payments, as `paysched schedule` would.
    actor = Actor.cli()
    try:
        await app.queue.obliterate()
        now = app.clock.now()
        deposits = {"alice": 1_000_000, "bob": 500_000, "carol": 1_000}  # minor units
        for name in ("alice", "bob", "carol", "dave"):
            await app.db(app.store.accounts.create_account, name, "USD", now)
            if name in deposits:
                await app.db(app.store.accounts.deposit, name, deposits[name], now)
        start = app.clock.now()
        payment_ids = []
        for i in range(count):
            due = start + timedelta(seconds=1 + seconds * i / count)
            if i % 12 == 5:  # carol cannot afford these: permanent failure, no retry
                payer, payee, amount, memo = "carol", "dave", 50_000, "rent"
            else:
                payer, payee = rng.sample(["alice", "bob"], 1)[0], rng.choice(["carol", "dave"])
                amount = rng.randrange(100, 5_000)
                memo = f"flaky:{1 + i % 2}" if i % 9 == 3 else "invoice"
            payment = await app.create_payment(
                actor=actor,
                payer=payer,
                payee=payee,
                amount=amount,
                currency="USD",
                due_at=due,
                cron=None,
                timezone=None,
                memo=memo,
            )
            payment_ids.append(payment.id)
        stop = asyncio.Event()
        runner = asyncio.create_task(app.run(stop))
        began = time.monotonic()
        deadline = began + seconds + 60
        occs = []
        # On a terminal the progress line redraws in place; in a log, one line every 2 s.
        tty = sys.stderr.isatty()
        last_line = 0.0
        while time.monotonic() < deadline:
            occs = await app.db(app.store.reads.all_occurrences, payment_ids)
            counts = {s: sum(1 for o in occs if o.state == s) for s in OccurrenceState}
            final = sum(counts[s] for s in FINAL_STATES)
            line = (
                f"[{time.monotonic() - began:5.1f}s] succeeded {counts[S.SUCCEEDED]:>3}  "
                f"failed {counts[S.FAILED]:>3}  retrying {counts[S.RETRYING]:>3}  "
                f"executing {counts[S.EXECUTING]:>3}  unknown {counts[S.UNKNOWN]:>3}  waiting "
                f"{counts[S.QUEUED] + counts[S.SCHEDULED]:>3}  / {len(payment_ids)}"
            )
            if tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
            elif time.monotonic() - last_line >= 2:
                print(line, file=sys.stderr, flush=True)
                last_line = time.monotonic()
            if occs and final == len(occs) and len(occs) == len(payment_ids):
                break
            await asyncio.sleep(0.25)
        if tty:
            print(file=sys.stderr)
        stop.set()
        await runner
        occs = await app.db(app.store.reads.all_occurrences, payment_ids)
        ledger = await app.db(app.store.accounts.ledger_report)
        accounts = await app.db(app.store.accounts.list_accounts)
        conserved = sum(a.balance for a in accounts) == sum(deposits.values())
        late = sorted(v for o in occs if (v := lateness_ms(o)) is not None)
        summary = {
            "payments": len(payment_ids),
            "succeeded": sum(1 for o in occs if o.state == S.SUCCEEDED),
            "failed": sum(1 for o in occs if o.state == S.FAILED),
            "retried": sum(1 for o in occs if o.attempts > 1),
            "unfinished": sum(1 for o in occs if o.state not in FINAL_STATES),
            "lateness_ms": {
                "p50": percentile(late, 50),
                "p95": percentile(late, 95),
                "max": late[-1] if late else 0,
            },
            "ledger_balanced": ledger.balanced and conserved,
            "ledger_problems": ledger.problems,
            "executor": app.executor.name if app.executor else None,
            "redis": "embedded" if app.embedded else "external",
        }
        if provider is not None:
            summary |= provider_check(provider, occs)
        await app.queue.obliterate()
        return summary
    finally:
        await app.close()


def run_demo(
    base: Settings, count: int, seconds: float, quiet: bool, executor: str = "ledger"
) -> dict[str, Any]:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not quiet:
        logging.getLogger("paysched.app").setLevel(logging.INFO)
        logging.getLogger("paysched.redis").setLevel(logging.INFO)
        # Notifications on the log channel: what the people involved would be told.
        logging.getLogger("paysched.notify").setLevel(logging.INFO)
    cfg = demo_settings(base)
    if executor == "http":
        token = secrets.token_hex(16)
        with StandinProvider(
            None, token=token, seed="demo", rates=STANDIN_RATES, hang_s=2.0, settle_s=1.5
        ) as provider:
            for name, balance in STANDIN_BALANCES.items():
                provider.set_balance(name, balance)
            summary = asyncio.run(
                _demo(with_standin(cfg, provider, token), count, seconds, quiet, provider)
            )
    else:
        summary = asyncio.run(_demo(cfg, count, seconds, quiet, None))
    if not quiet:
        lat = summary["lateness_ms"]
        print(
            f"\n{summary['payments']} payments: {summary['succeeded']} succeeded, "
            f"{summary['failed']} failed, {summary['retried']} retried, "
            f"{summary['unfinished']} unfinished\n"
            f"start lateness: p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms\n"
            f"ledger balanced: {'yes' if summary['ledger_balanced'] else 'NO'}"
            + "".join(f"\n  {p}" for p in summary["ledger_problems"])
        )
        if "provider" in summary:
            pv = summary["provider"]
            print(
                f"provider: {pv['charges']} charges, faults drawn {pv['faults_drawn']}\n"
                f"provider charged each succeeded payment once and nothing else: "
                f"{'yes' if pv['matches'] else 'NO'}" + "".join(f"\n  {p}" for p in pv["problems"])
            )
    return summary


def provider_check(provider: StandinProvider, occs: list[Any]) -> dict[str, Any]:
    """The stand-in's ledger against paysched's: one succeeded charge per succeeded occurrence,
    none for any other."""
    charges = {c.key: c for c in provider.charges()}
    problems = []
    for occ in occs:
        paid = occ.key in charges and charges[occ.key].status == "succeeded"
        if (occ.state == S.SUCCEEDED) != paid:
            theirs = charges[occ.key].status if occ.key in charges else "none"
            problems.append(f"{occ.key}: {occ.state.value} here, provider charge {theirs}")
    keys = {o.key for o in occs}
    problems += [f"{key}: charged, but no such occurrence" for key in charges if key not in keys]
    statuses = [c.status for c in charges.values()]
    return {
        "provider": {
            "charges": {s: statuses.count(s) for s in sorted(set(statuses))},
            "faults_drawn": provider.faults.snapshot()["drawn"],
            "matches": not problems,
            "problems": problems,
        }
    }
