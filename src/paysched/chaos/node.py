"""A paysched worker process whose executor misbehaves: `python -m paysched.chaos.node`.

It is `paysched worker` (with PAYSCHED_PROCESSES > 1, a supervised group of them, as
`paysched worker --processes K`) with the ledger executor wrapped in faults, decided per
(occurrence, attempt) from the run's seed so every worker agrees:
  - a transient failure (RetryableError) at PAYSCHED_CHAOS_FAIL_RATE, via FlakyExecutor;
  - a hang past the provider timeout at PAYSCHED_CHAOS_HANG_RATE: the call hangs, the wrapper's
    timeout fires and the attempt fails as retryable; half of these hang *after* the money
    moved (the response is lost), so the retry must find the occurrence already succeeded;
  - a stall at PAYSCHED_CHAOS_STALL_RATE: the event loop blocks longer than the job lock, so
    the queue hands the job to another worker while this one still runs it; the fence must
    stop this one settling.

With PAYSCHED_EXECUTOR=http the executor is the provider client (the stand-in provider injects
its own faults: declines, timeouts before and after committing, errors, dropped connections,
pending charges) and only the stalls are added here; the wrapper keeps `lookup`, so unknown
outcomes go to the resolver as they would in production. The harness can also hold one
payment's first attempt in a stall *after* the provider answered, for as long as it needs to
stage a takeover around it (PAYSCHED_CHAOS_HOLD_DIR, see `StallingProvider`).

PAYSCHED_CHAOS_DB_ERROR_RATE makes that share of the statements that write occurrences (claims,
finishes and settles, mostly group commits) fail with the driver's own OperationalError, as a
lock timeout or a dropped connection would.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

from sqlalchemy import event

from paysched.app import App, default_executor
from paysched.chaos.model import DB_ERROR_LOG_LINE, INJECTED_DB_ERROR
from paysched.config import Settings
from paysched.errors import BackendUnavailable, RetryableError
from paysched.executors.base import ExecutionResult, Executor, PaymentOrder, Resolvable
from paysched.executors.claims import claim_of
from paysched.executors.flaky import FlakyExecutor
from paysched.executors.ledger import LedgerExecutor
from paysched.logs import setup_logging
from paysched.supervisor import PARENT_ENV, adopt, shares, supervise

log = logging.getLogger("paysched.chaos.node")


def _rate(name: str) -> float:
    return float(os.environ.get(name, "0") or 0)


class FaultPlan:
    """Which fault, if any, hits one attempt: the same answer in every process."""

    def __init__(self, seed: str, fail: float, hang: float, stall: float) -> None:
        self.seed = seed
        self.fail, self.hang, self.stall = fail, hang, stall

    def draw(self, order: PaymentOrder) -> str:
        x = random.Random(f"{self.seed}:{order.idempotency_key}:{order.attempt}").random()
        for name, rate in (
            ("fail", self.fail),
            ("hang-before", self.hang / 2),
            ("hang-after", self.hang / 2),
            ("stall", self.stall),
        ):
            if x < rate:
                return name
            x -= rate
        return "none"


class HangingExecutor:
    """Hangs past the provider timeout (before or after the real call), or stalls the loop."""

    def __init__(self, inner: Executor, plan: FaultPlan, timeout_s: float, stall_s: float) -> None:
        self.name = f"hanging({inner.name})"
        self._inner = inner
        self._plan = plan
        self._timeout_s = timeout_s
        self._stall_s = stall_s

    async def _hang(self) -> None:
        try:
            await asyncio.wait_for(asyncio.sleep(self._timeout_s * 10), self._timeout_s)
        except TimeoutError:
            message = f"provider timed out after {self._timeout_s}s (injected)"
            raise RetryableError(message) from None

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        fault = self._plan.draw(order)
        if fault == "hang-before":
            await self._hang()
        if fault == "stall":
            log.warning("stalling the event loop %.1fs on %s", self._stall_s, order.idempotency_key)
            time.sleep(self._stall_s)  # blocks lock renewal: the job is taken over meanwhile
        result = await self._inner.execute(order)
        if fault == "hang-after":
            await self._hang()
        return result


# The longest a held attempt waits for the harness to let it go (a harness that died).
HOLD_MAX_S = 60.0


class StallingProvider(HangingExecutor):
    """A provider client with stalls added; asked about unknown outcomes like the real one.

    `hold_dir` (the harness's `stall_takeover_cancel` fault): when a file named by a payment's
    id is there, the first attempt of that payment (not a takeover) stalls the event loop right
    after the provider answered, as a worker that sent the charge and froze: it writes
    `<id>.held` (its fence and what the provider said), then blocks until the harness removes
    the mark, meanwhile the queue hands the job to another worker."""

    def __init__(
        self, inner: Executor, plan: FaultPlan, stall_s: float, hold_dir: Path | None = None
    ) -> None:
        super().__init__(inner, plan, timeout_s=1.0, stall_s=stall_s)
        assert isinstance(inner, Resolvable), "the chaos provider executor is resolvable"
        self._provider: Resolvable = inner
        self._hold_dir = hold_dir

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        result = await super().execute(order)
        self._hold(order, result)
        return result

    def _hold(self, order: PaymentOrder, result: ExecutionResult) -> None:
        claim = claim_of(order)  # the fence and takeovers: the harness's, not a provider's
        if self._hold_dir is None or claim.occurrence.takeovers or claim.attempt != 1:
            return
        mark = self._hold_dir / str(claim.payment.id)
        if not mark.exists():
            return
        try:  # once: a retry of this attempt after a database error is not held again
            with (self._hold_dir / f"{claim.payment.id}.held").open("x") as f:
                json.dump(
                    {
                        "fence": claim.fence,
                        "outcome": result.outcome.value,
                        "reason": result.reason,
                    },
                    f,
                )
        except FileExistsError:
            return
        log.warning(
            "holding the event loop after the provider answered %s on %s",
            result.outcome.value,
            claim.occurrence.key,
        )
        deadline = time.monotonic() + HOLD_MAX_S
        while mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # blocks lock renewal: the job is taken over meanwhile

    async def lookup(self, order: PaymentOrder) -> ExecutionResult:
        return await self._provider.lookup(order)

    async def aclose(self) -> None:
        close = getattr(self._provider, "aclose", None)
        if close is not None:
            await close()


def build_executor(app: App) -> Executor:
    plan = FaultPlan(
        os.environ.get("PAYSCHED_CHAOS_SEED", "0"),
        _rate("PAYSCHED_CHAOS_FAIL_RATE"),
        _rate("PAYSCHED_CHAOS_HANG_RATE"),
        _rate("PAYSCHED_CHAOS_STALL_RATE"),
    )
    stall_s = app.settings.lock_ms / 1000 * 2.5
    inject_db_errors(app, _rate("PAYSCHED_CHAOS_DB_ERROR_RATE"))
    if app.settings.executor != "ledger":
        provider = default_executor(app)
        hold = os.environ.get("PAYSCHED_CHAOS_HOLD_DIR")
        return StallingProvider(
            provider, FaultPlan(plan.seed, 0, 0, plan.stall), stall_s, Path(hold) if hold else None
        )
    ledger = LedgerExecutor(app.store, app.clock, app.pool)
    hanging = HangingExecutor(
        ledger, plan, timeout_s=_rate("PAYSCHED_CHAOS_TIMEOUT_S") or 1.0, stall_s=stall_s
    )
    return FlakyExecutor(hanging, lambda c: c.attempt if plan.draw(c) == "fail" else 0)


# Statements that write occurrences: a claim, a finish, a settle, a release (all compare-and-set
# UPDATEs, most of them batched by a group commit), and the ledger inserts of a settle.
_WRITES = ("UPDATE occurrences", "INSERT INTO ledger_entries", "INSERT INTO transitions")


def inject_db_errors(app: App, rate: float) -> None:
    """Fail `rate` of the writing statements with the driver's OperationalError. The draw is
    random per statement (not seeded): a retry of the same write must be able to succeed."""
    if rate <= 0:
        return
    rng = random.Random()
    driver_error = app.store.engine.dialect.loaded_dbapi.OperationalError

    def maybe_fail(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().startswith(_WRITES) and rng.random() < rate:
            log.warning("%s into: %s", DB_ERROR_LOG_LINE, statement.split("(")[0][:60])
            raise driver_error(INJECTED_DB_ERROR)

    event.listen(app.store.engine, "before_cursor_execute", maybe_fail)


def dump_tasks() -> None:
    """`kill -USR2 pid`: every asyncio task's stack to the log (what is each job awaiting?)."""
    for task in asyncio.all_tasks():
        log.warning("task %s:\n%s", task.get_name(), "".join(_frames(task)))


def _frames(task: asyncio.Task[object]) -> list[str]:
    import io

    out = io.StringIO()
    task.print_stack(file=out)
    return [out.getvalue()]


def supervise_group(settings: Settings) -> int:
    """PAYSCHED_PROCESSES > 1: this process is a group's supervisor (as `paysched worker
    --processes K` is) and its children are chaos nodes sharing the concurrency."""
    count = min(settings.processes, settings.concurrency)
    children = [
        (
            f"chaos node {i + 1}/{count}",
            [sys.executable, "-m", "paysched.chaos.node"],
            {"PAYSCHED_CONCURRENCY": str(share), "PAYSCHED_PROCESSES": "1"},
        )
        for i, share in enumerate(shares(settings.concurrency, count))
    ]
    return supervise(settings, children)


def main() -> None:
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    if PARENT_ENV in os.environ:
        adopt()
    elif settings.processes > 1:
        try:
            sys.exit(supervise_group(settings))
        except BackendUnavailable as exc:
            log.error("error: %s", exc)
            sys.exit(5)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 pid`: stacks to the log

    async def run() -> None:
        app = await App.open(settings, executor_factory=build_executor, wait_for_backends=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
        try:
            await app.run(stop, scheduler=False, worker=True)
        finally:
            await app.close()

    try:
        asyncio.run(run())
    except BackendUnavailable as exc:  # as `paysched worker` does: one line, exit 5
        log.error("error: %s", exc)
        sys.exit(5)


if __name__ == "__main__":
    main()
