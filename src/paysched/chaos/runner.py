"""One chaos run: servers, payments, processes, faults, drain, invariants, report.

Everything it starts (Redis, PostgreSQL, paysched processes, the temp dir) is stopped and
removed in `finally`, also on an exception or Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from paysched.chaos import invariants, report
from paysched.chaos.approvals import Approver, approval_stats, decided_once
from paysched.chaos.cancels import Canceller
from paysched.chaos.faults import InjectedFault, Injector, plan
from paysched.chaos.model import BROKE, DB_ERROR_LOG_LINE, PlannedPayment, ProviderView
from paysched.chaos.pauses import Pauser
from paysched.chaos.procs import Processes
from paysched.chaos.provider import ChaosProvider
from paysched.chaos.reconciling import reconcile_check
from paysched.chaos.servers import (
    PostgresCluster,
    RedisServer,
    ReplicatedPostgres,
    SentinelRedis,
    wait_until,
)
from paysched.chaos.skips import Skipper
from paysched.config import Settings, normalise_database_url
from paysched.db.store import Store
from paysched.domain import FINAL_STATES, OccurrenceState

log = logging.getLogger("paysched.chaos")

PAYERS = ["payer-1", "payer-2", "payer-3", "payer-4"]
PAYEES = ["payee-1", "payee-2", "payee-3"]
# Recurring payments beside the one-time ones: seconds-first crons, so a run sees many.
CRONS = ["*/2 * * * * *", "*/3 * * * * *", "*/5 * * * * *"]
CATCHUPS = ["all", "latest", "none"]
LOOKAHEAD_S = 5.0
# Of the one-time payments, those created requiring approval; how often the approver looks.
APPROVAL_SHARE = 0.1
APPROVE_EVERY_S = 0.5
# A pause holds 1-4 s: with late_after 1 s, what fell due early in a pause is late at its
# resume (and caught up by the policy), what fell due in its last second is not.
LATE_AFTER = "1s"


@dataclass
class Config:
    seed: int
    duration: float = 60.0
    payments: int = 500
    database: str = "sqlite"
    workers: int = 3
    # Processes per worker group (`paysched worker --processes K`: a supervisor and K
    # children, as on one host); 1: each worker one process.
    worker_processes: int = 1
    schedulers: int = 2
    concurrency: int = 3
    drain_timeout: float = 120.0
    fail_rate: float = 0.08
    hang_rate: float = 0.03
    stall_rate: float = 0.01
    executor: str = "ledger"  # or "provider": the HTTP executor against the stand-in
    recurring: int = 6
    db_error_rate: float = 0.005  # of the statements writing occurrences, in the workers
    log_level: str = "WARNING"
    keep: bool = False
    faults: tuple[str, ...] = ()  # only these fault kinds (a focused run); () = every kind
    # Redis as a primary, a replica and three sentinels; on PostgreSQL a primary with a
    # synchronous standby: adds the redis_failover and pg_switchover faults.
    replicated: bool = False


def child_env(cfg: Config, redis_url: str, database_url: str, workdir: Path) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "PAYSCHED_DATA_DIR": str(workdir / "data"),
        "PAYSCHED_EMBEDDED_REDIS": "never",
        "PAYSCHED_QUEUE_PREFIX": "chaos",
        "PAYSCHED_LOCK_MS": "2000",
        "PAYSCHED_TICK_CRON": "*/2 * * * * *",
        "PAYSCHED_LOOKAHEAD": f"{LOOKAHEAD_S:g}s",
        "PAYSCHED_CATCHUP_LATE_AFTER": LATE_AFTER,
        "PAYSCHED_BACKOFF_MS": "200",
        "PAYSCHED_BACKOFF_JITTER": "0.2",
        "PAYSCHED_ATTEMPTS": "4",
        "PAYSCHED_CONCURRENCY": str(cfg.concurrency),
        "PAYSCHED_SHUTDOWN_GRACE": "5s",
        "PAYSCHED_LOG_LEVEL": cfg.log_level,
        "PAYSCHED_NOTIFY_POLL": "1s",
        "PAYSCHED_CHAOS_SEED": str(cfg.seed),
        "PAYSCHED_CHAOS_FAIL_RATE": str(cfg.fail_rate),
        "PAYSCHED_CHAOS_HANG_RATE": str(cfg.hang_rate),
        "PAYSCHED_CHAOS_STALL_RATE": str(cfg.stall_rate),
        "PAYSCHED_CHAOS_TIMEOUT_S": "1.0",
        "PAYSCHED_CHAOS_DB_ERROR_RATE": str(cfg.db_error_rate),
    }


def create_payments(
    store: Store, cfg: Config
) -> tuple[list[PlannedPayment], dict[str, int], datetime]:
    """Accounts, deposits, `cfg.payments` one-time payments due over the fault phase and
    `cfg.recurring` recurring ones, each with a catch-up policy drawn from the seed."""
    rng = random.Random(f"payments-{cfg.seed}")
    approvals_rng = random.Random(f"approval-payments-{cfg.seed}")
    now = datetime.now(UTC)
    deposits: dict[str, int] = {}
    for name in [*PAYERS, *PAYEES, BROKE]:
        store.accounts.create_account(name, "USD", now)
    for name in PAYERS:
        deposits[name] = 50_000_000
        store.accounts.deposit(name, deposits[name], now)
    deposits[BROKE] = 2_000
    store.accounts.deposit(BROKE, deposits[BROKE], now)
    # Leave time to create them all and start the processes before the first falls due.
    base = now + timedelta(seconds=3 + cfg.payments * 0.004)
    span = max(cfg.duration - 2.0, 1.0)
    planned = []
    for _ in range(cfg.payments):
        if rng.random() < 0.06:
            payer, amount = BROKE, rng.randint(500, 5_000)
        else:
            payer, amount = rng.choice(PAYERS), rng.randint(1, 50_000)
        payee = rng.choice([n for n in [*PAYEES, *PAYERS] if n != payer])
        due = base + timedelta(seconds=rng.uniform(0, span))  # microsecond precision
        # Its own draws: a seed's other choices stay what they were before approvals.
        approval = approvals_rng.random() < APPROVAL_SHARE
        payment = store.payments.create_payment(
            payer=payer,
            payee=payee,
            amount=amount,
            currency="USD",
            due_at=due,
            cron=None,
            timezone=None,
            memo="chaos",
            now=datetime.now(UTC),
            approval="required" if approval else "none",
        )
        planned.append(PlannedPayment(payment.id, payer, payee, amount, due, approval=approval))
    for _ in range(cfg.recurring):
        payer = rng.choice(PAYERS)
        payee, amount, cron = rng.choice(PAYEES), rng.randint(100, 5_000), rng.choice(CRONS)
        catchup = rng.choice(CATCHUPS)
        payment = store.payments.create_payment(
            payer=payer,
            payee=payee,
            amount=amount,
            currency="USD",
            due_at=None,
            cron=cron,
            timezone=None,
            memo="chaos recurring",
            now=base - timedelta(seconds=1),
            catchup=catchup,
        )
        assert payment.next_due_at is not None
        planned.append(
            PlannedPayment(payment.id, payer, payee, amount, payment.next_due_at, cron, catchup)
        )
    return planned, deposits, base


def fund_provider(provider: ChaosProvider, deposits: dict[str, int]) -> None:
    """The same balances at the provider (which then moves the money), payees from zero."""
    for name in [*PAYERS, *PAYEES, BROKE]:
        provider.set_balance(name, Decimal(deposits.get(name, 0)) / 100)


def run(cfg: Config) -> dict[str, Any]:
    if cfg.database not in ("sqlite", "postgresql"):
        raise ValueError(f"--database: expected sqlite or postgresql, got {cfg.database!r}")
    if cfg.executor not in ("ledger", "provider"):
        raise ValueError(f"--executor: expected ledger or provider, got {cfg.executor!r}")
    workdir = Path(tempfile.mkdtemp(prefix=f"paysched-chaos-{cfg.seed}-"))
    redis = SentinelRedis(workdir / "redis") if cfg.replicated else RedisServer(workdir / "redis")
    pg: PostgresCluster | ReplicatedPostgres | None = None
    procs: Processes | None = None
    store: Store | None = None
    provider: ChaosProvider | None = None
    hold_dir: Path | None = None
    started = datetime.now(UTC)
    try:
        redis.start()
        sqlite_path: Path | None = None
        if cfg.database == "postgresql":
            if cfg.replicated:
                pg = ReplicatedPostgres(workdir / "pg")
                pg.start()
            else:
                pg = PostgresCluster(workdir / "pg")
                pg.init()
            database_url = pg.url()
        else:
            sqlite_path = workdir / "paysched.db"
            database_url = f"sqlite:///{sqlite_path}"
        env = child_env(cfg, redis.url, database_url, workdir)
        procs = Processes(env, workdir / "logs")
        if cfg.executor == "provider":
            provider = ChaosProvider(workdir, cfg.seed)
            env |= provider.env()
            hold_dir = workdir / "hold"  # payments whose first attempt a fault holds
            hold_dir.mkdir()
            env["PAYSCHED_CHAOS_HOLD_DIR"] = str(hold_dir)
            procs.add("provider", 1, provider.command())
            procs.start("provider-1")
            wait_until(provider.up, 20, "the stand-in provider")
        # Resume applies catch-up in this process: with the children's late_after.
        late_after = Settings.from_env(env).catchup_late_after
        store = Store.connect(
            normalise_database_url(database_url), pool_size=2, late_after=late_after
        )
        store.migrate()
        payments, deposits, base = create_payments(store, cfg)
        if provider is not None:
            fund_provider(provider, deposits)
        log.info(
            "seed %s: %s payments (%s recurring) due from %s",
            cfg.seed,
            len(payments),
            cfg.recurring,
            base.isoformat(),
        )
        canceller = Canceller(store, payments, LOOKAHEAD_S, cfg.seed)

        procs.add("scheduler", cfg.schedulers)
        group: dict[str, str] = {}
        if cfg.worker_processes > 1:  # each child as many jobs at once as a lone worker
            total = cfg.concurrency * cfg.worker_processes
            group = {
                "PAYSCHED_PROCESSES": str(cfg.worker_processes),
                "PAYSCHED_CONCURRENCY": str(total),
            }
        procs.add("worker", cfg.workers, env=group)
        for name in procs.procs:
            if name != "provider-1":
                procs.start(name)
        active = procs

        # The approver decides on its own thread, under whatever fault is on: a decision that
        # waits out a database outage must not hold up the faults planned after it.
        approver = Approver(store, cfg.seed)
        approver_stop = threading.Event()

        def approving() -> None:
            while not approver_stop.wait(APPROVE_EVERY_S):
                approver.step()

        approving_thread = threading.Thread(target=approving, name="chaos-approver", daemon=True)
        approving_thread.start()

        def sleep(seconds: float) -> None:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                active.supervise()
                time.sleep(min(0.2, left))

        pauser = Pauser(store, payments, cfg.seed, sleep, canceller.cancelled_ids)

        def busy() -> set[int]:  # what a skip leaves alone: cancelled or held by a pause
            return canceller.cancelled_ids() | {r.payment_id for r in pauser.open_records()}

        skipper = Skipper(store, payments, cfg.seed, sleep, busy)
        injector = Injector(
            procs,
            redis,
            pg,
            sqlite_path,
            env,
            sleep,
            canceller,
            provider,
            pauser,
            hold_dir,
            skipper,
        )
        phase_start = time.monotonic() + max(0.0, (base - datetime.now(UTC)).total_seconds())
        injected: list[InjectedFault] = []
        for fault in plan(
            cfg.seed,
            cfg.duration,
            cfg.database,
            cfg.executor,
            only=cfg.faults,
            groups=cfg.worker_processes > 1,
            replicated=cfg.replicated,
        ):
            sleep(phase_start + fault.at - time.monotonic())
            try:
                done = injector.inject(fault)
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                log.warning("fault %s could not be injected: %s", fault.kind, exc)
                continue
            log.info("fault %s %s", done.kind, done.detail)
            injected.append(done)
        sleep(phase_start + cfg.duration - time.monotonic())

        # Drain: no more faults, everything running; a payment a pause left paused is resumed,
        # the recurring payments end (cancelled, as a subscription ends); wait for every
        # occurrence to be final.
        drain_start = time.monotonic()
        procs.revive_all()
        end_recurring(canceller, payments, sleep, pauser)
        one_time = {p.id for p in payments if p.cron is None}
        while time.monotonic() - drain_start < cfg.drain_timeout:
            try:
                occs = store.reads.all_occurrences()
                cancelled = {p.id for p in store.payments.list_payments(10**6, state="cancelled")}
                pending = one_time - cancelled - {o.payment_id for o in occs}
                if not pending and all(
                    o.state in FINAL_STATES or o.state == OccurrenceState.NEEDS_REVIEW for o in occs
                ):
                    break
            except Exception as exc:
                log.debug("drain probe: %s", exc)
            sleep(0.5)
        drain_s = time.monotonic() - drain_start
        approver_stop.set()
        approving_thread.join(timeout=30)
        # Last, while the provider is still up: an operator's `paysched reconcile` over the run.
        closing, reconciled = reconcile_check(env, started, datetime.now(UTC))
        db_errors = procs.count_in_logs(DB_ERROR_LOG_LINE)
        view: ProviderView | None = provider.view() if provider is not None else None
        procs.stop_all()
        unexpected = procs.unexpected_exits()
        for name, tails in procs.exit_logs().items():
            log.info(
                "%s exited on its own %s time(s); last lines before the last exit:\n%s",
                name,
                len(tails),
                tails[-1],
            )

        results = invariants.check(
            store,
            cfg.seed,
            payments,
            deposits,
            datetime.now(UTC),
            canceller.records,
            view,
            pauser.records,
            late_after,
            skipper.records,
        )
        results = [*results, decided_once(approver.records, cfg.seed), closing]
        occurrences = store.reads.all_occurrences()
        transitions = store.reads.transitions_of([o.id for o in occurrences]) if occurrences else []
        extra = {
            "cancels": report.cancel_stats(injected, canceller.records),
            "pauses": report.pause_stats(injected, pauser.records, occurrences),
            "skips": report.skip_stats(injected, skipper.records),
            "provider": report.provider_stats(view),
            "unknown_to_resolved_s": report.unknown_resolution(transitions),
            "reconcile": reconciled,
            "approvals": approval_stats(approver.records),
        }
        result = report.run_report(
            seed=cfg.seed,
            database=cfg.database,
            executor=cfg.executor,
            duration=cfg.duration,
            payments=report.payment_stats(occurrences, transitions, len(payments)),
            faults=injected,
            results=results,
            recovery_times=report.recovery(injected, occurrences),
            drain_s=drain_s,
            unexpected_exits=unexpected,
            started=started,
            extra=extra,
        )
        if db_errors:
            result["faults"]["db_error"] = db_errors  # injected by the workers themselves
        result["exit_log_tails"] = {n: t[-1] for n, t in procs.exit_logs().items()}
        if result["violations"]:
            broken = {n: r for n, r in result["invariants"].items() if not r["ok"]}
            log.error("seed %s: invariant violations:\n%s", cfg.seed, json.dumps(broken, indent=2))
        return result
    finally:
        if procs is not None:
            procs.stop_all(grace=5)
        if store is not None:
            store.close()
        if provider is not None:
            provider.close()
        redis.stop()
        if pg is not None:
            pg.destroy()
        if cfg.keep:
            log.warning("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def end_recurring(
    canceller: Canceller,
    payments: list[PlannedPayment],
    sleep: Callable[[float], None],
    pauser: Pauser | None = None,
) -> None:
    """Resume every payment a pause left paused (its record then holds the resume), then
    cancel every recurring payment still running, retrying through a last outage."""
    if pauser is not None:
        pauser.resume_open()
    for p in payments:
        if p.cron is None or p.id in canceller.cancelled_ids():
            continue
        for _ in range(40):
            try:
                canceller.cancel_payment(p.id, "end")
                break
            except Exception as exc:  # the database is still coming back
                log.info("ending recurring payment %s: %s", p.id, exc)
                sleep(0.5)
