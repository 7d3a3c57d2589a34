"""The only code that talks to BullMQ: enqueue, remove, counts, workers and reconcile probes
(this package: its worker in `fetching`, the delay waker in `waker`, the Redis retry policy of
its clients in `connection`).

Job id = occurrence key, so enqueueing the same occurrence twice is a no-op in Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bullmq import Job, Queue, UnrecoverableError, Worker

from paysched.backoff import Backoff
from paysched.clock import to_ms
from paysched.domain import Occurrence, Payment, payment_summary
from paysched.queue.connection import reconnect_promptly
from paysched.queue.fetching import SequentialFetchWorker
from paysched.queue_counts import QUEUE_STATES
from paysched.redis_client import bullmq_connection, owns_pool

log = logging.getLogger("paysched.queue")

JOB_NAME = "payment"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# BullMQ priorities run from 1 (first) to 2**21 - 1.
_MAX_PRIORITY = 2**21 - 1
# KEYS: completed set, failed set, then one job hash per ARGV job id. 0 live, 1 missing, 2 finished.
PRESENCE_LUA = """
local out = {}
for i = 1, #ARGV do
  if redis.call("ZSCORE", KEYS[1], ARGV[i]) or redis.call("ZSCORE", KEYS[2], ARGV[i]) then
    out[i] = 2
  elseif redis.call("EXISTS", KEYS[i + 2]) == 0 then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
PRESENCE = ("live", "missing", "finished")
PRESENCE_BATCH = 1000
# BullMQ attempts beyond the business attempts: the processor decides from the database when a
# payment has used its attempts; these only let the queue retry through errors of paysched's
# own database or Redis without giving up on the job (reconcile would re-create it anyway).
INFRA_RETRIES = 25
# A deployment that announced itself on this queue within this window is using it now.
DEPLOYMENT_SEEN_MS = 10 * 60_000

Processor = Callable[[Job, str], Awaitable[Any]]
# The summaries (payment_summary) of a batch of jobs' payments, by payment id: one read per
# enqueue, not one per job.
SummaryReader = Callable[[Sequence[int]], Awaitable[Mapping[int, str]]]


def priority_for(due_at: datetime) -> int:
    """Earlier due -> smaller number -> served first, also for retries and backlogs.

    Minutes since the epoch, folded into BullMQ's 21-bit range: the order is exact within any
    ~4-year span (2**21 minutes); jobs due in the same minute keep their enqueue order.
    """
    return int(1 + (to_ms(due_at) // 60_000) % (_MAX_PRIORITY - 1))


def not_before_ms(due_at: datetime) -> int:
    """The epoch millisecond a job may start at so that it never starts before `due_at`.

    `to_ms` truncates (a due time of .706417 s became .706 s) and BullMQ promotes a delayed job
    once round(time.time() * 1000) reaches its time, i.e. up to 0.5 ms early: together a job
    could start up to 1.5 ms before its due time. Round up, plus 1 ms for BullMQ's rounding.
    """
    micros = (due_at - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000) + 1


class RetryLater(Exception):
    """Raised from the processor to have BullMQ retry after exactly `delay_ms`."""

    def __init__(self, message: str, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms


class AttemptFailed(RetryLater):
    """An attempt failed for a business reason (the provider's 503, a timeout before the
    request left) and the payment is retried: the reason is the whole story, as for
    PaymentFailed. A retry for paysched's own database or Redis error stays a RetryLater, with
    its stack trace."""


class GiveUp(UnrecoverableError):  # type: ignore[misc]
    """Raised from the processor for a failure that must not be retried."""


class PaymentFailed(GiveUp):
    """The payment failed for a business reason (declined, insufficient funds, out of
    attempts): the message is that reason, and it is the whole story (see _without_traceback)."""


def _without_traceback(processor: Processor) -> Processor:
    """BullMQ stores str(error) as the job's failedReason and appends traceback.format_exc()
    to its stacktrace. For a business failure that traceback is paysched's own call chain, not
    what went wrong: Bull Board showed it under "insufficient funds" as if paysched had crashed.
    Such a job ends, or is retried, with its reason alone; the stack traces of attempts that
    met paysched's own database or Redis errors stay."""

    async def process(job: Job, token: str) -> Any:
        try:
            return await processor(job, token)
        except (PaymentFailed, AttemptFailed):
            job.updateStacktrace = lambda: None  # this job object only, for this failure
            raise

    return process


def _backoff_strategy(attempts_made: int, _type: str, err: Any, _job: Any) -> int:
    # The processor already decided the delay (and recorded it in the database).
    if isinstance(err, RetryLater):
        return err.delay_ms
    return 1000


class PaymentQueue:
    def __init__(
        self,
        redis_url: str,
        name: str,
        prefix: str,
        attempts: int,
        backoff: Backoff,
        keep_completed: int = 10_000,
        deployment_id: str = "",
    ) -> None:
        self.redis_url = redis_url
        self.deployment_id = deployment_id
        self.name = name
        self.prefix = prefix
        self.attempts = attempts
        self.backoff = backoff
        self.keep_completed = keep_completed
        self._queue = Queue(name, {"connection": bullmq_connection(redis_url), "prefix": prefix})
        owns_pool(self._queue.client)
        reconnect_promptly(self._queue.client)
        self._presence_script = self._queue.client.register_script(PRESENCE_LUA)
        # Set by the app: without it jobs carry ids only (tools that open a queue of their own).
        self.read_summaries: SummaryReader | None = None

    @property
    def redis(self) -> Any:
        """The queue's redis-py asyncio client (for probes and tests)."""
        return self._queue.client

    async def close(self) -> None:
        await self._queue.close()

    async def ping(self) -> None:
        await self.redis.ping()

    async def server_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self.redis.info("server")
        return info

    def _job_options(self, occ: Occurrence, now: datetime, attempts: int) -> dict[str, Any]:
        return {
            "jobId": occ.key,
            # BullMQ counts the delay from the job's timestamp, which it otherwise takes at the
            # moment of the add; pinning it to `now` makes the job due exactly at due_at however
            # long the database work before the add took.
            "timestamp": to_ms(now),
            "delay": max(0, not_before_ms(occ.due_at) - to_ms(now)),
            "priority": priority_for(occ.due_at),
            "attempts": attempts,
            "backoff": {"type": "paysched", "delay": self.backoff.base_ms},
            # Completed jobs stay a day (bounded by count) so a late duplicate enqueue still
            # dedups against them; the database, not Redis, is the record of what happened.
            "removeOnComplete": {"age": 86_400, "count": self.keep_completed},
            "removeOnFail": {"age": 7 * 86_400},
        }

    async def _summaries(
        self, occurrences: Sequence[Occurrence], known: Mapping[int, Payment]
    ) -> dict[int, str]:
        """Each payment's summary: of the payments the caller passed, and in one read of the
        others.

        Informative only: a read that fails leaves those jobs without a summary rather than
        holding back payments that are due."""
        out = {
            p.id: payment_summary(p.id, p.amount, p.currency, p.payer, p.payee)
            for p in known.values()
        }
        wanted = sorted({o.payment_id for o in occurrences} - out.keys())
        if wanted and self.read_summaries is not None:
            try:
                out.update(await self.read_summaries(wanted))
            except Exception as exc:
                log.warning("job summaries left out (reading payments failed: %s)", exc)
        return out

    async def enqueue(
        self,
        occurrences: Sequence[Occurrence],
        now: datetime,
        attempts: int | None = None,
        payments: Mapping[int, Payment] | None = None,
    ) -> None:
        """Add one job per occurrence; jobs that already exist are left untouched (dedup).

        `payments`: those of the occurrences' payments the caller has at hand (by id); the
        others are read for the jobs' summaries."""
        if not occurrences:
            return
        summaries = await self._summaries(occurrences, payments or {})
        jobs: list[dict[str, Any]] = []
        for occ in occurrences:
            data: dict[str, Any] = {
                "occurrence_id": occ.id,
                "payment_id": occ.payment_id,
                "due_at_ms": to_ms(occ.due_at),
            }
            if occ.payment_id in summaries:
                data["summary"] = summaries[occ.payment_id]
            if self.deployment_id:  # whose database this job belongs to
                data["deployment"] = self.deployment_id
            jobs.append(
                {
                    "name": JOB_NAME,
                    "data": data,
                    "opts": self._job_options(occ, now, attempts or self.attempts + INFRA_RETRIES),
                }
            )
        for start in range(0, len(jobs), 500):
            await self._queue.addBulk(jobs[start : start + 500])
        for occ, job in zip(occurrences, jobs, strict=True):
            log.info(
                "added payment #%s to queue (job id %s, delay %sms)",
                occ.payment_id,
                occ.key,
                job["opts"]["delay"],
            )

    async def remove(self, job_id: str) -> bool:
        """Remove a job that is not being processed. False when it is active (locked)."""
        removed = await self._queue.remove(job_id)
        return bool(removed)

    async def replace(
        self,
        occurrences: Sequence[Occurrence],
        now: datetime,
        finished: Collection[str] | None = None,
    ) -> None:
        """Enqueue these occurrences afresh. Their old jobs are removed first: a finished job
        keeps its id (the occurrence key) in Redis and would dedup the new one away. With
        `finished` (the keys the caller found finished), only those: a live job, e.g. one
        waiting out its backoff, keeps its job and its delay. An active job cannot be
        removed; the new one dedups against it and its claim decides."""
        for occ in occurrences:
            if finished is None or occ.key in finished:
                await self.remove(occ.key)
        await self.enqueue(occurrences, now)

    async def job_states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """'missing' | 'waiting' | 'active' | 'delayed' | 'prioritized' | 'completed' | 'failed'."""
        states: dict[str, str] = {}
        for job_id in job_ids:
            state = await self._queue.getJobState(job_id)
            states[job_id] = "missing" if state in (None, "unknown") else str(state)
        return states

    async def presence(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Where each job stands for reconcile: 'live' (its hash exists and it has not finished),
        'missing' (no hash: Redis lost it) or 'finished' (in the completed or failed set).

        One Lua call per 1,000 ids. A pipeline of EXISTS + 2 ZSCORE per id cost ~0.1 ms of
        Python per id: with 2,000 pending payments each tick held the event loop ~200 ms, and
        payments due then started that late."""
        out: dict[str, str] = {}
        for start in range(0, len(job_ids), PRESENCE_BATCH):
            batch = list(job_ids[start : start + PRESENCE_BATCH])
            keys = [
                self._queue.toKey("completed"),
                self._queue.toKey("failed"),
                *(self._queue.toKey(job_id) for job_id in batch),
            ]
            codes = await self._presence_script(keys=keys, args=batch)
            out.update(zip(batch, (PRESENCE[int(c)] for c in codes), strict=True))
        return out

    async def existing(self, job_ids: Sequence[str]) -> set[str]:
        """The subset of job ids whose job is still in Redis."""
        return {k for k, v in (await self.presence(job_ids)).items() if v != "missing"}

    async def announce(self, now: datetime) -> list[str]:
        """Record that this deployment uses the queue; return the other deployments that used
        it within DEPLOYMENT_SEEN_MS (more than one database sharing a queue is a mistake that
        would have each refuse the other's jobs)."""
        await self.redis.hset(self._deployments_key, self.deployment_id, to_ms(now))
        return await self.other_deployments(now)

    async def other_deployments(self, now: datetime) -> list[str]:
        seen: dict[Any, Any] = await self.redis.hgetall(self._deployments_key)
        others = []
        for raw_id, raw_ms in seen.items():
            other = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if other != self.deployment_id and to_ms(now) - int(raw_ms) <= DEPLOYMENT_SEEN_MS:
                others.append(other)
        return sorted(others)

    async def identity(self) -> tuple[str, bool]:
        """(the run id of the Redis server the queue is on, whether the queue's mark survived).

        The run id changes when another server answers: a Sentinel failover promoted a replica,
        or a restart. The mark (set here when missing) disappears with the queue's keys on a
        flush or a restart without persistence. Either way jobs may be gone: reconcile. One
        round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.info("server")
        pipe.set(self._queue.toKey("paysched:mark"), "1", nx=True)
        info, created = await pipe.execute()
        return str(info.get("run_id", "")), not created

    @property
    def _deployments_key(self) -> str:
        key: str = self._queue.toKey("paysched:deployments")
        return key

    async def counts(self) -> dict[str, int]:
        raw = await self._queue.getJobCounts(*QUEUE_STATES)
        counts = {state: int(raw.get(state, 0)) for state in QUEUE_STATES}
        counts["total"] = sum(counts.values())
        return counts

    async def obliterate(self) -> None:
        await self._queue.obliterate(force=True)

    async def get_progress(self, job_id: str) -> Any:
        job = await self._queue.getJob(job_id)
        return None if job is None else job.progress

    async def start_worker(self, processor: Processor, concurrency: int, lock_ms: int) -> Worker:
        worker = SequentialFetchWorker(
            self.name,
            _without_traceback(processor),
            {
                # One pool for both of the worker's clients (under Sentinel): each takes a
                # connection of its own from it.
                "connection": bullmq_connection(self.redis_url),
                "prefix": self.prefix,
                "concurrency": concurrency,
                "lockDuration": lock_ms,
                "stalledInterval": lock_ms,
                "maxStalledCount": 3,
                "autorun": False,
                "settings": {"backoffStrategy": _backoff_strategy},
            },
        )
        # bullmq 3.4.4 rounds the blocking wait up to whole seconds until the blocking
        # connection has read the server version (capabilities default to "cannot block for
        # fractions"). Reading it before run() gives millisecond-precise promotion of delayed
        # jobs; bench/lateness.py measures it.
        reconnect_promptly(worker.backend.connection.conn)
        owns_pool(worker.backend.connection.conn)  # bullmq closes the blocking client first
        blocking = worker.backend.blocking_connection
        if blocking is not None:
            reconnect_promptly(blocking.conn)
            await blocking.getRedisVersion()
        # run() names its connections first (CLIENT SETNAME); a worker closed before its run
        # task got that far reopened them after close() and left them to the GC ("Event loop
        # is closed" at exit). Named here, run() has nothing left to open.
        await worker._ensure_client_names()
        return worker
