"""The scheduler: discover due payments, create their occurrences, enqueue, reconcile.

Its tick runs on a cron (every minute at :00 by default, as in the seed) but it is a safety net,
not the clock: everything due within the look-ahead window is enqueued as a delayed job, and a
payment created inside the window is enqueued at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar

from paysched.backoff import delay
from paysched.bot.reminders import reminder_outbox
from paysched.clock import Clock
from paysched.db.store import Store
from paysched.db.store.approvals import ExpiredOutbox
from paysched.domain import Occurrence, OccurrenceState, OutboxMessage, Payment
from paysched.notify.messages import NotifyPolicy, outbox_for
from paysched.queue import PaymentQueue
from paysched.schedules import next_cron
from paysched.threads import in_pool

log = logging.getLogger("paysched.scheduler")
P = ParamSpec("P")
R = TypeVar("R")
S = OccurrenceState
# Payments (and occurrences per payment) one materialize_due transaction takes at most.
MATERIALIZE_BATCH = 1000
# Payments one reminder sweep's transaction takes at most.
REMIND_BATCH = 500
# How often the scheduler looks whether Redis is still the server it was (one round trip).
WATCH_S = 2.0


@dataclass(frozen=True, slots=True)
class TickResult:
    created: int
    reconciled: int


class Scheduler:
    def __init__(
        self,
        store: Store,
        queue: PaymentQueue,
        clock: Clock,
        lookahead: timedelta,
        tick_cron: str,
        pool: ThreadPoolExecutor,
        policy: NotifyPolicy | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.queue = queue
        self.clock = clock
        self.lookahead = lookahead
        self.tick_cron = tick_cron
        self.pool = pool
        # The notifications of occurrences the approval timeout skips or failed (App.open).
        self.expired_outbox: ExpiredOutbox | None = None

    async def _db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await in_pool(self.pool, fn, *args, **kwargs)

    async def tick(self) -> TickResult:
        now = self.clock.now()
        # Reminders first: an occurrence made by this tick's materialize is no longer its
        # payment's next, and the sweep reminds of the next.
        await self.remind(now)
        created = await self._materialize(now, None)
        await self.expire_approvals(now)
        reconciled = await self.reconcile(now)
        return TickResult(created=created, reconciled=reconciled)

    async def remind(self, now: datetime) -> None:
        """Write the reminders due now (Reminders.remind_due), a batch per transaction. A failure
        is logged and tried again at the next tick: reminders never hold up payments."""
        try:
            while True:
                done = await self._db(
                    self.store.reminders.remind_due, now, reminder_outbox, REMIND_BATCH
                )
                if done < REMIND_BATCH:
                    break
        except Exception:
            log.exception("writing the reminders due failed; the next tick tries again")

    async def expire_approvals(self, now: datetime) -> int:
        """Skip or fail what waited for approval past its deadline (the payment's
        approval_on_timeout); how many."""
        expired = await self._db(self.store.approvals.expire_approvals, now, self.expired_outbox)
        if expired:
            log.warning(
                "%s occurrence(s) got no approval in time: %s",
                len(expired),
                ", ".join(f"{o.key} {o.state.value}" for o in expired[:10]),
            )
        return len(expired)

    async def schedule_now(self, payment_ids: Sequence[int]) -> int:
        """Enqueue at once what these (new or changed) payments have due within the window."""
        return await self._materialize(self.clock.now(), payment_ids)

    async def _materialize(self, now: datetime, payment_ids: Sequence[int] | None) -> int:
        horizon = now + self.lookahead
        total = 0
        while True:
            made = await self._db(
                self.store.payments.materialize_due,
                now,
                horizon,
                payment_ids,
                limit=MATERIALIZE_BATCH,
                missed_outbox=self.missed_outbox,
            )
            if not made:
                break
            # Fewer payments than a batch, and no payment stopped at the batch's cap of
            # occurrences: one call made everything due. Calling again only to find nothing
            # was a fifth of a create's transactions (POST /v1/payments).
            complete = (
                payment_ids is not None
                and len(payment_ids) < MATERIALIZE_BATCH
                and len(made) < MATERIALIZE_BATCH
            )
            total += await self.enqueue_made(made, now)
            if complete:
                break
        return total

    async def enqueue_made(
        self,
        made: Sequence[Occurrence],
        now: datetime,
        payments: Mapping[int, Payment] | None = None,
    ) -> int:
        """Enqueue the scheduled ones of occurrences just materialized (committed), and mark
        them queued; say which were missed. Returns how many were enqueued. `payments`: those
        of their payments at hand (the queue reads the others for its jobs' summaries)."""
        missed = [o for o in made if o.state == S.MISSED]
        if missed:
            log.warning(
                "%s occurrence(s) missed by their payments' catch-up policy: %s",
                len(missed),
                ", ".join(o.key for o in missed[:10]),
            )
        created = [o for o in made if o.state == S.SCHEDULED]
        if not created:
            return 0
        log.info("found %s payment(s) due for execution", len(created))
        # Committed first, enqueued second: a crash in between leaves `scheduled` rows that
        # the next reconcile enqueues, never a job without its row.
        await self.queue.enqueue(created, now, payments=payments)
        await self._db(self.store.payments.mark_queued, [o.id for o in created], now)
        return len(created)

    def missed_outbox(self, payment: Payment, occurrence: Occurrence) -> list[OutboxMessage]:
        """The notifications of an occurrence its catch-up policy did not run."""
        if self.policy is None:
            return []
        return outbox_for(
            self.policy, "missed", payment, occurrence, 0, self.clock.now(), occurrence.reason
        )

    async def reconcile(self, now: datetime) -> int:
        """Re-enqueue every occurrence the database holds as pending but Redis has lost.

        Covers Redis restarts without persistence, FLUSHALL, eviction, and a scheduler that died
        between commit and enqueue. Returns how many jobs were re-created.
        """
        pending = await self._db(self.store.reads.pending_occurrences, now + self.lookahead)
        if not pending:
            return 0
        presence = await self.queue.presence([o.key for o in pending])
        lost = [o for o in pending if presence[o.key] != "live"]
        if lost:
            # Re-read: a worker may have finished some of these while we looked at Redis (the
            # database commits first, then the job completes).
            still = {
                o.id
                for o in await self._db(self.store.reads.pending_occurrences, now + self.lookahead)
            }
            lost = [o for o in lost if o.id in still]
        if lost:
            log.warning(
                "reconcile: %s pending occurrence(s) missing from the queue; re-enqueueing",
                len(lost),
            )
            await self._replace(lost, presence, now)
        scheduled = [o.id for o in pending if o.state == S.SCHEDULED]
        if scheduled:
            await self._db(self.store.payments.mark_queued, scheduled, now)
        return len(lost)

    async def requeue(self, occurrences: Sequence[Occurrence], now: datetime) -> list[Occurrence]:
        """Enqueue those of these pending occurrences that have no live job (missing, or
        finished while the database still says pending); a live job, e.g. one waiting out its
        backoff, is left as it is. Returns the occurrences enqueued."""
        if not occurrences:
            return []
        presence = await self.queue.presence([o.key for o in occurrences])
        lost = [o for o in occurrences if presence[o.key] != "live"]
        await self._replace(lost, presence, now)
        return lost

    async def _replace(
        self, lost: Sequence[Occurrence], presence: dict[str, str], now: datetime
    ) -> None:
        # A job that finished in Redis while the database still says pending was failed by the
        # queue itself (stalled too often) or ended refused (its payment paused): replaced.
        finished = {key for key, where in presence.items() if where == "finished"}
        await self.queue.replace(lost, now, finished)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Tick now (to pick up any backlog), then on every cron fire until `stop` is set.

        Between ticks it watches Redis (every WATCH_S): when another server answers (a
        Sentinel failover, a restart) or the queue's keys are gone (a flush), it reconciles at
        once instead of at the next tick, a minute away by default. A failed tick is retried
        with backoff instead of waiting for the next fire."""
        log.info("scheduler started: tick %r, look-ahead %s", self.tick_cron, self.lookahead)
        watch = RedisWatch(self.queue)
        due = self.clock.now()
        failures = 0
        while not stop.is_set():
            now = self.clock.now()
            if now >= due:
                try:
                    await self.tick()
                    failures = 0
                    due = next_cron(self.tick_cron, self.clock.now())
                except Exception:
                    failures += 1
                    retry = delay(2 * WATCH_S, failures, cap=60.0)
                    log.exception("scheduler tick failed; retrying in %.0f s", retry)
                    due = min(next_cron(self.tick_cron, now), now + timedelta(seconds=retry))
            elif await watch.changed():
                log.warning(
                    "Redis is another server or lost the queue's keys (failover, restart or "
                    "flush): reconciling the queue with the database now"
                )
                try:
                    await self.reconcile(now)
                except Exception:
                    log.exception("reconcile after the Redis change failed; retrying")
                    watch.forget()
            wait = min((due - self.clock.now()).total_seconds(), WATCH_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.01))
        log.info("scheduler stopped")


class RedisWatch:
    """Says when the queue's Redis is not the one seen last (see PaymentQueue.identity)."""

    def __init__(self, queue: PaymentQueue) -> None:
        self.queue = queue
        self._run_id: str | None = None

    def forget(self) -> None:
        """The next look counts as a change (a reconcile that failed is tried again)."""
        self._run_id = ""

    async def changed(self) -> bool:
        try:
            run_id, marked = await self.queue.identity()
        except Exception:  # Redis away: the tick and the workers report it
            return False
        before, self._run_id = self._run_id, run_id
        if before is None:  # the first look; the scheduler's first tick reconciles anyway
            return False
        return run_id != before or not marked
