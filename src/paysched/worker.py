"""The job processor: the occurrence state machine around an executor.

Every attempt claims the occurrence in the database first (bumping its fence), so a job that the
queue delivers twice — after a stall, a lost lock or a reconcile — finds the occurrence final or
takes it over; the executor's settle is fenced, so money moves at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

from bullmq import Job, Worker
from sqlalchemy.exc import DBAPIError

from paysched.clock import Clock
from paysched.db.store import Claim, Finish, Store
from paysched.domain import OccurrenceState, OutboxMessage
from paysched.errors import BackendUnavailable, PermanentError
from paysched.events import Event, EventBus, EventKind
from paysched.executors.base import Executor
from paysched.notify.messages import NotifyPolicy, outbox_for
from paysched.queue import Backoff, DelayWaker, GiveUp, PaymentQueue, RetryLater
from paysched.threads import GroupCommit

log = logging.getLogger("paysched.worker")
S = OccurrenceState

# Claims beyond attempts + this many mean the job keeps killing or stalling its workers.
STALL_ALLOWANCE = 3
# A step that ends sooner is not written to the job's progress in Redis (see _progress_while).
PROGRESS_DEFER_S = 0.2


class CorruptJob(ValueError):
    pass


def occurrence_id_of(data: Any) -> int:
    if not isinstance(data, dict):
        raise CorruptJob(f"job data must be an object, got {type(data).__name__}")
    value = data.get("occurrence_id")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CorruptJob(f"occurrence_id: expected a positive integer, got {value!r}")
    return value


class PaymentProcessor:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        bus: EventBus,
        clock: Clock,
        backoff: Backoff,
        max_attempts: int,
        pool: ThreadPoolExecutor,
        notify: NotifyPolicy,
    ) -> None:
        self.notify = notify
        self.store = store
        self.executor = executor
        self.bus = bus
        self.clock = clock
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.pool = pool
        # Concurrent jobs claim and finish in shared transactions (see GroupCommit).
        self._claims: GroupCommit[int, Claim | None] = GroupCommit(
            pool, lambda ids: store.claim_many(ids, clock.now())
        )
        self._finishes: GroupCommit[Finish, bool] = GroupCommit(
            pool, lambda items: store.finish_many(items, clock.now())
        )

    def _emit(self, kind: EventKind, claim: Claim, **detail: Any) -> None:
        self.bus.emit(
            Event(kind, self.clock.now(), claim.occurrence.key, claim.payment.id, claim.attempt,
                  detail)
        )  # fmt: skip

    async def _progress(self, job: Job, claim: Claim, percent: int, step: str) -> None:
        await self._write_progress(job, percent, step)
        self._emit(EventKind.PROGRESS, claim, progress=percent, step=step)

    async def _write_progress(self, job: Job, percent: int, step: str) -> None:
        try:
            await job.updateProgress({"percent": percent, "step": step})
        except Exception as exc:  # progress is informative; never fail a payment over it
            log.debug("progress update for %s failed: %s", job.id, exc)

    @contextlib.asynccontextmanager
    async def _progress_while(
        self, job: Job, claim: Claim, percent: int, step: str
    ) -> AsyncIterator[None]:
        """Progress for a step that may be quick: subscribers hear of it at once, Redis only if
        the step is still running after PROGRESS_DEFER_S. Each write to Redis is a Lua script
        and a stream entry; the profile had two per payment costing as much CPU as fetching
        the job, for a step that a ledger payment leaves within milliseconds. A slow executor
        (a payment provider) still shows "executing" in the queue."""
        self._emit(EventKind.PROGRESS, claim, progress=percent, step=step)
        written: asyncio.Task[None] | None = None

        def publish() -> None:
            nonlocal written
            written = asyncio.ensure_future(self._write_progress(job, percent, step))

        handle = asyncio.get_running_loop().call_later(PROGRESS_DEFER_S, publish)
        try:
            yield
        finally:
            handle.cancel()
            if written is not None:
                await written  # so that it cannot land after the next step's write

    async def __call__(self, job: Job, token: str) -> dict[str, Any]:
        try:
            occurrence_id = occurrence_id_of(job.data)
        except CorruptJob as exc:
            log.error("job %s is corrupt and cannot run: %s", job.id, exc)
            self.bus.emit(Event(EventKind.ERROR, self.clock.now(), str(job.id),
                                detail={"error": f"corrupt job: {exc}"}))  # fmt: skip
            raise GiveUp(f"corrupt job: {exc}") from None
        try:
            claim = await self._claims.submit(occurrence_id)
        except DBAPIError as exc:
            raise RetryLater(f"database unavailable: {exc.orig}", self.backoff.delay_ms(1)) from exc
        if claim is None:
            log.info("job %s: occurrence already final or gone, nothing to do", job.id)
            return {"skipped": True}
        log.info("processing payment job %s: payment #%s (attempt %s)", job.id,
                 claim.payment.id, claim.attempt)  # fmt: skip
        claim = replace(claim, on_success=tuple(self._outbox(claim, "succeeded")))
        # "claimed" is immediately followed by "executing": subscribers only, not Redis.
        self._emit(EventKind.PROGRESS, claim, progress=10, step="claimed")

        attempts_allowed = int(job.opts.get("attempts") or 1)
        last_attempt = job.attemptsMade + 1 >= attempts_allowed
        if claim.attempt > self.max_attempts + STALL_ALLOWANCE:
            await self._fail(claim, f"gave up after {claim.attempt} claims (workers kept dying)")
        try:
            async with self._progress_while(job, claim, 50, f"executing via {self.executor.name}"):
                result = await self.executor.execute(claim, claim.occurrence.key)
        except PermanentError as exc:
            await self._fail(claim, str(exc))
        except (DBAPIError, BackendUnavailable) as exc:
            await self._retry_or_fail(claim, f"database error: {exc}", last_attempt,
                                      job.attemptsMade + 1)  # fmt: skip
        except Exception as exc:  # retryable by type, or unexpected: both get another try
            await self._retry_or_fail(claim, str(exc) or type(exc).__name__, last_attempt,
                                      job.attemptsMade + 1)  # fmt: skip
        if result.fenced_out:
            log.warning("job %s lost its claim to another worker; not settling", job.id)
            return {"fenced_out": True}
        if not result.settled and not await self._finish(
            claim, S.SUCCEEDED, None, claim.on_success
        ):
            return {"fenced_out": True}
        await self._progress(job, claim, 100, "succeeded")
        self._emit(EventKind.COMPLETED, claim, reference=result.reference,
                   amount=claim.payment.amount, currency=claim.payment.currency)  # fmt: skip
        return {"succeeded": True, "occurrence": claim.occurrence.key}

    async def _finish(
        self, claim: Claim, target: OccurrenceState, reason: str | None,
        outbox: Sequence[OutboxMessage],
    ) -> bool:  # fmt: skip
        return await self._finishes.submit(Finish(claim, target, reason, tuple(outbox)))

    def _outbox(
        self, claim: Claim, event: str, reason: str | None = None, next_at: datetime | None = None
    ) -> list[OutboxMessage]:
        return outbox_for(self.notify, event, claim.payment, claim.occurrence, claim.attempt,
                          self.clock.now(), reason, next_at)  # fmt: skip

    async def _fail(self, claim: Claim, reason: str) -> NoReturn:
        outbox = self._outbox(claim, "failed", reason)
        if await self._finish(claim, S.FAILED, reason, outbox):
            self._emit(EventKind.FAILED, claim, reason=reason)
        raise GiveUp(reason)

    async def _retry_or_fail(self, claim: Claim, reason: str, last: bool, attempt: int) -> NoReturn:
        if last:
            await self._fail(claim, f"{reason} (after {claim.attempt} attempts)")
        delay = self.backoff.delay_ms(attempt)
        next_at = self.clock.now() + timedelta(milliseconds=delay)
        outbox = self._outbox(claim, "retrying", reason, next_at)
        if await self._finish(claim, S.RETRYING, reason, outbox):
            self._emit(EventKind.RETRYING, claim, reason=reason, delay_ms=delay)
        raise RetryLater(reason, delay)


class WorkerPool:
    """A BullMQ worker running PaymentProcessor with N concurrent jobs."""

    def __init__(self, queue: PaymentQueue, processor: PaymentProcessor, concurrency: int,
                 lock_ms: int) -> None:  # fmt: skip
        self.queue = queue
        self.processor = processor
        self.concurrency = concurrency
        self.lock_ms = lock_ms
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None
        self._waker = DelayWaker(queue)

    async def start(self) -> None:
        self._worker = await self.queue.start_worker(self.processor, self.concurrency, self.lock_ms)
        self._worker.on("error", self._on_error)
        self._task = asyncio.create_task(self._worker.run())
        self._waker.start()
        log.info("worker started: queue %s, concurrency %s", self.queue.name, self.concurrency)

    def _on_error(self, err: Exception, job: Job | None = None) -> None:
        """Queue-level errors (lost connection, failed lock renewal) reach the event bus too."""
        key = str(job.id) if job is not None else "-"
        self.processor.bus.emit(
            Event(EventKind.ERROR, self.processor.clock.now(), key, detail={"error": str(err)})
        )

    async def stop(self, grace_s: float) -> None:
        """Stop taking jobs; let active ones finish within the grace period, then force."""
        if self._worker is None:
            return
        worker = self._worker
        await self._waker.stop()
        try:
            await asyncio.wait_for(worker.close(), timeout=grace_s)
        except TimeoutError:
            log.warning("active payments did not finish within %.0fs; forcing close", grace_s)
            await worker.close(force=True)
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        self._worker = None
        log.info("worker stopped")
