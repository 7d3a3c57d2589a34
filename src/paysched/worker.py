"""The job processor: the occurrence state machine around an executor.

Every attempt claims the occurrence in the database first (bumping its fence), so a job that the
queue delivers twice — after a stall, a lost lock or a reconcile — finds the occurrence final or
takes it over; the executor's settle is fenced, so money moves at most once. The executor's
outcome decides what follows: succeeded, declined (failed at once), not attempted (retried with
backoff, the same idempotency key), or unknown (handed to the resolver, never guessed).
Errors of paysched's own database or Redis are retried without counting as attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

from bullmq import Job, Worker

from paysched import metrics
from paysched.backoff import Backoff
from paysched.clock import Clock
from paysched.db.errors import described
from paysched.db.store import Claim, Finish, LostRace, NoClaim, Store
from paysched.domain import OccurrenceState, OutboxMessage, may_have_reached_provider
from paysched.errors import BackendUnavailable, DatabaseError, PermanentError, RetryableError
from paysched.events import Event, EventBus, EventKind
from paysched.executors.base import ExecutionResult, Executor, Outcome, Resolvable
from paysched.executors.claims import order_of
from paysched.logs import payment_fields
from paysched.notify.messages import NotifyPolicy, outbox_for
from paysched.queue import AttemptFailed, GiveUp, PaymentFailed, PaymentQueue, RetryLater
from paysched.queue.waker import DelayWaker
from paysched.threads import GroupCommit
from paysched.views import lateness_ms

log = logging.getLogger("paysched.worker")
S = OccurrenceState

# Takeovers beyond this many mean the job keeps killing or stalling its workers: a person must
# look (with a provider, money may have moved; guessing "failed" could pay twice later).
MAX_TAKEOVERS = 10
# A step that ends sooner is not written to the job's progress in Redis (see _progress_while).
PROGRESS_DEFER_S = 0.2
# Under load a claim batch waits this long for the jobs being fetched behind it (see GroupCommit)
CLAIM_LINGER_S = 0.005  # s; the start of a burst's payments moves by at most this
# Retries after paysched's own database failed: exponential from the backoff base, capped.
INFRA_RETRY_CAP_MS = 15_000
# The resolver first asks about an unknown outcome this long after it happened.
FIRST_CHECK = timedelta(seconds=2)
_INFRA_ERRORS = (DatabaseError, LostRace, BackendUnavailable)


class CorruptJob(ValueError):
    pass


def occurrence_id_of(data: Any) -> int:
    if not isinstance(data, dict):
        raise CorruptJob(f"job data must be an object, got {type(data).__name__}")
    value = data.get("occurrence_id")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CorruptJob(f"occurrence_id: expected a positive integer, got {value!r}")
    deployment = data.get("deployment")
    if deployment is not None and not isinstance(deployment, str):
        raise CorruptJob(f"deployment: expected a string, got {deployment!r}")
    return value


@dataclass(slots=True)
class Shown:
    """Whether a step's progress reached the job in Redis (or only the event bus)."""

    in_redis: bool = False


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
        deployment_id: str,
    ) -> None:
        self.notify = notify
        self.store = store
        self.executor = executor
        self.bus = bus
        self.clock = clock
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.pool = pool
        self.deployment_id = deployment_id
        # Concurrent jobs claim and finish in shared transactions (see GroupCommit).
        self._claims: GroupCommit[tuple[int, str | None], Claim | NoClaim] = GroupCommit(
            pool,
            lambda requests: store.execution.claim_many(requests, clock.now()),
            linger_s=CLAIM_LINGER_S,
        )
        self._finishes: GroupCommit[Finish, bool] = GroupCommit(
            pool, lambda items: store.execution.finish_many(items, clock.now())
        )

    def _emit(self, kind: EventKind, claim: Claim, **detail: Any) -> None:
        self.bus.emit(
            Event(
                kind,
                self.clock.now(),
                claim.occurrence.key,
                claim.payment.id,
                claim.attempt,
                detail,
            )
        )

    async def _write_progress(self, job: Job, percent: int, step: str) -> None:
        try:
            await job.updateProgress({"percent": percent, "step": step})
        except Exception as exc:  # progress is informative; never fail a payment over it
            log.debug("progress update for %s failed: %s", job.id, exc)

    @contextlib.asynccontextmanager
    async def _progress_while(
        self, job: Job, claim: Claim, percent: int, step: str
    ) -> AsyncIterator[Shown]:
        """Progress for a step that may be quick: subscribers hear of it at once, Redis only if
        the step is still running after PROGRESS_DEFER_S. Each write to Redis is a Lua script
        and a stream entry; the profile had two per payment costing as much CPU as fetching
        the job, for a step that a ledger payment leaves within milliseconds. A slow executor
        (a payment provider) still shows "executing" in the queue. The yielded Shown says
        whether it did (see _record)."""
        self._emit(EventKind.PROGRESS, claim, progress=percent, step=step)
        shown = Shown()
        written: asyncio.Task[None] | None = None

        def publish() -> None:
            nonlocal written
            shown.in_redis = True
            written = asyncio.ensure_future(self._write_progress(job, percent, step))

        handle = asyncio.get_running_loop().call_later(PROGRESS_DEFER_S, publish)
        try:
            yield shown
        finally:
            handle.cancel()
            if written is not None:
                await written  # so that it cannot land after the next step's write

    def _refuse(self, job: Job, why: str) -> NoReturn:
        """A job of another deployment sharing this Redis queue: never run or complete it,
        say so loudly, and hand it back to the queue for a worker of its own deployment."""
        message = (
            f"job {job.id} belongs to another paysched deployment ({why}); refusing it. Two "
            "deployments share one Redis queue: give each its own PAYSCHED_QUEUE or Redis db"
        )
        log.error(message)
        self.bus.emit(
            Event(
                EventKind.ERROR,
                self.clock.now(),
                str(job.id),
                detail={"error": message, "foreign_job": True},
            )
        )
        raise RetryLater(message, random.randint(500, 2000))

    def _infra_delay(self, job: Job) -> int:
        return min(self.backoff.delay_ms(job.attemptsMade + 1), INFRA_RETRY_CAP_MS)

    async def __call__(self, job: Job, token: str) -> dict[str, Any]:
        try:
            occurrence_id = occurrence_id_of(job.data)
        except CorruptJob as exc:
            log.error("job %s is corrupt and cannot run: %s", job.id, exc)
            self.bus.emit(
                Event(
                    EventKind.ERROR,
                    self.clock.now(),
                    str(job.id),
                    detail={"error": f"corrupt job: {exc}"},
                )
            )
            raise GiveUp(f"corrupt job: {exc}") from None
        deployment = job.data.get("deployment")
        if deployment is not None and deployment != self.deployment_id:
            self._refuse(job, f"deployment {deployment}")
        try:
            claimed = await self._claims.submit((occurrence_id, str(job.id)))
        except _INFRA_ERRORS as exc:
            delay = self._infra_delay(job)
            raise RetryLater(described(exc), delay) from exc
        if isinstance(claimed, NoClaim):
            if claimed.why == "foreign":
                self._refuse(job, f"occurrence {occurrence_id} has another key here")
            log.info(
                "job %s: nothing to do (occurrence %s)",
                job.id,
                claimed.state.value if claimed.state else claimed.why,
            )
            return {"skipped": True, "why": claimed.why}
        claim = replace(claimed, on_success=tuple(self._outbox(claimed, "succeeded")))
        fields = payment_fields(claim.occurrence.key, claim.payment.id, claim.attempt)
        log.info(
            "processing payment job %s: payment #%s (attempt %s)",
            job.id,
            claim.payment.id,
            claim.attempt,
            extra=fields,
        )
        # "claimed" is immediately followed by "executing": subscribers only, not Redis.
        occ = claim.occurrence
        first_start = claim.attempt == 1 and occ.takeovers == 0 and occ.started_at is not None
        lateness = {"lateness_ms": lateness_ms(occ)} if first_start else {}
        self._emit(EventKind.PROGRESS, claim, progress=10, step="claimed", **lateness)
        try:
            if claim.occurrence.takeovers > MAX_TAKEOVERS:
                return await self._needs_review(
                    claim,
                    f"its workers died or stalled {claim.occurrence.takeovers} times "
                    "while executing it",
                )
            try:
                async with self._progress_while(
                    job, claim, 50, f"executing via {self.executor.name}"
                ) as shown:
                    began = time.monotonic()
                    try:
                        result = await self.executor.execute(order_of(claim))
                    finally:
                        metrics.observe_executor(
                            self.executor.name, "execute", time.monotonic() - began
                        )
            except _INFRA_ERRORS as exc:
                # described: the ledger's InfrastructureError already says "database …";
                # prefixed again, reasons read "database error: database error: …".
                await self._release(claim, described(exc))
                delay = self._infra_delay(job)
                raise RetryLater(described(exc), delay) from exc
            except RetryableError as exc:
                result = ExecutionResult.not_attempted(str(exc) or type(exc).__name__)
            except PermanentError as exc:
                result = ExecutionResult.declined(str(exc) or type(exc).__name__)
            except Exception as exc:  # nobody can say what it left behind
                log.exception("executor %s raised on %s", self.executor.name, job.id)
                result = ExecutionResult.unknown(f"executor error: {type(exc).__name__}: {exc}")
            return await self._record(job, claim, result, shown)
        except _INFRA_ERRORS as exc:
            # Recording the outcome failed: the occurrence stays executing under this fence,
            # and the retry takes it over and asks the executor again with the same key.
            delay = self._infra_delay(job)
            raise RetryLater(described(exc), delay) from exc

    async def _record(
        self, job: Job, claim: Claim, result: ExecutionResult, shown: Shown
    ) -> dict[str, Any]:
        if result.fenced_out:
            log.warning("job %s lost its claim to another worker; not settling", job.id)
            return {"fenced_out": True}
        if result.outcome == Outcome.DECLINED:
            await self._fail(claim, result.reason or "declined", result.reference)
        if result.outcome == Outcome.NOT_ATTEMPTED:
            return await self._retry_or_fail(claim, result.reason or "not attempted")
        if result.outcome == Outcome.UNKNOWN:
            return await self._unknown(claim, result)
        if not result.settled and not await self._finish(
            Finish(claim, S.SUCCEEDED, None, claim.on_success, reference=result.reference)
        ):
            return {"fenced_out": True}
        # The job's completion in Redis (its returnvalue, {"succeeded": true, ...}) says what a
        # 100 % progress would: that write was one Lua script and a stream entry per payment,
        # a third of the scripts a payment ran. Only a job whose "executing" the queue showed
        # gets it, so that no finished job is left showing a step it has left.
        if shown.in_redis:
            await self._write_progress(job, 100, "succeeded")
        self._emit(EventKind.PROGRESS, claim, progress=100, step="succeeded")
        self._emit(
            EventKind.COMPLETED,
            claim,
            reference=result.reference,
            amount=claim.payment.amount,
            currency=claim.payment.currency,
        )
        return {"succeeded": True, "occurrence": claim.occurrence.key}

    async def _finish(self, item: Finish) -> bool:
        return await self._finishes.submit(item)

    def _outbox(
        self, claim: Claim, event: str, reason: str | None = None, next_at: datetime | None = None
    ) -> list[OutboxMessage]:
        return outbox_for(
            self.notify,
            event,
            claim.payment,
            claim.occurrence,
            claim.attempt,
            self.clock.now(),
            reason,
            next_at,
        )

    async def _fail(self, claim: Claim, reason: str, reference: str | None = None) -> NoReturn:
        outbox = self._outbox(claim, "failed", reason)
        if await self._finish(Finish(claim, S.FAILED, reason, tuple(outbox), reference)):
            self._emit(EventKind.FAILED, claim, reason=reason)
        raise PaymentFailed(reason)

    async def _retry_or_fail(self, claim: Claim, reason: str) -> dict[str, Any]:
        if may_have_reached_provider(claim.occurrence):
            # This request never left, but the worker this attempt was taken over from may
            # have sent one that went through. Left retrying, a cancel would stop it and bury
            # that charge; so the provider is asked first, and "never received" sends it again
            # under the same key. An executor that cannot be asked leaves it to a person at the
            # end, never to "failed".
            if isinstance(self.executor, Resolvable):
                return await self._unknown(
                    claim,
                    ExecutionResult.unknown(
                        f"{reason}; the worker this attempt was taken over from may have reached "
                        "the provider: asking the provider first"
                    ),
                )
            if claim.attempt >= self.max_attempts:
                return await self._needs_review(
                    claim,
                    (
                        f"{reason} (after {claim.attempt} attempts); the worker this attempt was "
                        f"taken over from may have reached the provider, and executor "
                        f"{self.executor.name} cannot be asked what happened"
                    ),
                )
        if claim.attempt >= self.max_attempts:
            if isinstance(self.executor, Resolvable):
                # This request never left, but an earlier one with the same key may have gone
                # through (its answer lost, its worker taken over): "failed, nothing moved"
                # is the provider's to say. The resolver asks; "never received" ends failed.
                return await self._unknown(
                    claim,
                    ExecutionResult.unknown(
                        f"{reason} (after {claim.attempt} attempts); asking the provider whether "
                        "an earlier request went through"
                    ),
                )
            await self._fail(claim, f"{reason} (after {claim.attempt} attempts)")
        delay = self.backoff.delay_ms(claim.attempt)
        next_at = self.clock.now() + timedelta(milliseconds=delay)
        outbox = self._outbox(claim, "retrying", reason, next_at)
        if await self._finish(Finish(claim, S.RETRYING, reason, tuple(outbox))):
            self._emit(EventKind.RETRYING, claim, reason=reason, delay_ms=delay)
        raise AttemptFailed(reason, delay)

    async def _unknown(self, claim: Claim, result: ExecutionResult) -> dict[str, Any]:
        reason = result.reason or "outcome unknown"
        if not isinstance(self.executor, Resolvable):
            return await self._needs_review(
                claim, f"{reason}; executor {self.executor.name} cannot be asked what happened"
            )
        resolve_at = self.clock.now() + FIRST_CHECK
        item = Finish(claim, S.UNKNOWN, reason, reference=result.reference, resolve_at=resolve_at)
        if await self._finish(item):
            self._emit(EventKind.UNKNOWN, claim, reason=reason)
        return {"unknown": True, "occurrence": claim.occurrence.key}

    async def _needs_review(self, claim: Claim, reason: str) -> dict[str, Any]:
        outbox = self._outbox(claim, "needs_review", reason)
        if await self._finish(Finish(claim, S.NEEDS_REVIEW, reason, tuple(outbox))):
            self._emit(EventKind.NEEDS_REVIEW, claim, reason=reason)
        return {"needs_review": True, "occurrence": claim.occurrence.key}

    async def _release(self, claim: Claim, reason: str) -> None:
        """Give the occurrence back after paysched's own database failed under the attempt:
        retrying, and the attempt does not count. If even that cannot be written, the
        occurrence stays executing and the retry takes it over."""
        note = f"{reason}; retrying (not counted as an attempt)"
        with contextlib.suppress(*_INFRA_ERRORS):
            await self._finish(Finish(claim, S.RETRYING, note, uncount=True))


class WorkerPool:
    """A BullMQ worker running PaymentProcessor with N concurrent jobs."""

    def __init__(
        self, queue: PaymentQueue, processor: PaymentProcessor, concurrency: int, lock_ms: int
    ) -> None:
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

    @property
    def alive(self) -> bool:
        """Started, and its fetch loop has not ended (what its heartbeat says)."""
        return self._task is not None and not self._task.done()

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
        # Not wait_for(worker.close(), grace): bullmq's close() shields its teardown and keeps
        # waiting through a cancellation, so the grace never ended and a hung payment kept
        # the process alive forever after SIGTERM.
        closing = asyncio.ensure_future(worker.close())
        done, _ = await asyncio.wait({closing}, timeout=grace_s)
        if not done:
            log.warning("active payments did not finish within %.0fs; forcing close", grace_s)
            # Cancels the jobs still running: their occurrences stay executing under their
            # fence and the next worker takes them over (a settle already in flight is fenced).
            await worker.close(force=True)
            await asyncio.wait({closing}, timeout=5)
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        self._worker = None
        log.info("worker stopped")
