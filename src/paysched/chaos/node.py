"""A paysched worker process whose executor misbehaves: `python -m paysched.chaos.node`.

It is `paysched worker` with the ledger executor wrapped in faults, decided per (occurrence,
attempt) from the run's seed so every worker agrees:
  - a transient failure (RetryableError) at PAYSCHED_CHAOS_FAIL_RATE, via FlakyExecutor;
  - a hang past the provider timeout at PAYSCHED_CHAOS_HANG_RATE: the call hangs, the wrapper's
    timeout fires and the attempt fails as retryable; half of these hang *after* the money
    moved (the response is lost), so the retry must find the occurrence already succeeded;
  - a stall at PAYSCHED_CHAOS_STALL_RATE: the event loop blocks longer than the job lock, so
    the queue hands the job to another worker while this one still runs it; the fence must
    stop this one settling.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import random
import signal
import sys
import time

from paysched.app import App
from paysched.cli import setup_logging
from paysched.config import Settings
from paysched.db.store import Claim
from paysched.errors import BackendUnavailable, RetryableError
from paysched.executors.base import ExecutionResult, Executor
from paysched.executors.flaky import FlakyExecutor
from paysched.executors.ledger import LedgerExecutor

log = logging.getLogger("paysched.chaos.node")


def _rate(name: str) -> float:
    return float(os.environ.get(name, "0") or 0)


class FaultPlan:
    """Which fault, if any, hits one attempt: the same answer in every process."""

    def __init__(self, seed: str, fail: float, hang: float, stall: float) -> None:
        self.seed = seed
        self.fail, self.hang, self.stall = fail, hang, stall

    def draw(self, claim: Claim) -> str:
        x = random.Random(f"{self.seed}:{claim.occurrence.key}:{claim.attempt}").random()
        for name, rate in (("fail", self.fail), ("hang-before", self.hang / 2),
                           ("hang-after", self.hang / 2), ("stall", self.stall)):  # fmt: skip
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

    async def execute(self, claim: Claim, idempotency_key: str) -> ExecutionResult:
        fault = self._plan.draw(claim)
        if fault == "hang-before":
            await self._hang()
        if fault == "stall":
            log.warning("stalling the event loop %.1fs on %s", self._stall_s, idempotency_key)
            time.sleep(self._stall_s)  # blocks lock renewal: the job is taken over meanwhile
        result = await self._inner.execute(claim, idempotency_key)
        if fault == "hang-after":
            await self._hang()
        return result


def build_executor(app: App) -> Executor:
    plan = FaultPlan(
        os.environ.get("PAYSCHED_CHAOS_SEED", "0"), _rate("PAYSCHED_CHAOS_FAIL_RATE"),
        _rate("PAYSCHED_CHAOS_HANG_RATE"), _rate("PAYSCHED_CHAOS_STALL_RATE"),
    )  # fmt: skip
    ledger = LedgerExecutor(app.store, app.clock, app.pool)
    hanging = HangingExecutor(
        ledger, plan, timeout_s=_rate("PAYSCHED_CHAOS_TIMEOUT_S") or 1.0,
        stall_s=app.settings.lock_ms / 1000 * 2.5,
    )  # fmt: skip
    return FlakyExecutor(hanging, lambda c: c.attempt if plan.draw(c) == "fail" else 0)


def dump_tasks() -> None:
    """`kill -USR2 pid`: every asyncio task's stack to the log (what is each job awaiting?)."""
    for task in asyncio.all_tasks():
        log.warning("task %s:\n%s", task.get_name(), "".join(_frames(task)))


def _frames(task: asyncio.Task[object]) -> list[str]:
    import io

    out = io.StringIO()
    task.print_stack(file=out)
    return [out.getvalue()]


def main() -> None:
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 pid`: stacks to the log

    async def run() -> None:
        app = await App.open(settings, executor_factory=build_executor)
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
