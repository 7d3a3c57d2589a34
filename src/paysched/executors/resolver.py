"""The resolver: finds out what became of payments whose outcome was unknown.

An executor answers UNKNOWN when money may or may not have moved (a read timeout, a 5xx, a
dropped connection, a provider's "pending"). paysched never guesses: no retry with a new key,
no "failed". The resolver asks the provider by idempotency key on a backoff — seconds, then
minutes, then at most `max_interval` apart — and acts only on an answer:

- succeeded  -> the occurrence succeeded (notified as usual);
- declined   -> failed, with the provider's reason;
- never received (404) -> queued again with the SAME key (or failed when its attempts are used
  up: nothing moved, so that is the truth). Believed only once the request's own timeout
  (`in_flight`) has passed since it was sent: until then a provider that records a payment
  when it commits may not know of one still in flight, so the answer is "unknown, ask again
  then";
- still unknown after `window` -> needs_review: a person decides with `paysched resolve`.

Several resolvers may run (one per worker process): each leases the few occurrences it checks
at once, for as long as one lookup may take. A resolver that dies mid-check, or a check that
fails on paysched's own database or Redis, leaves them to be asked again when the lease ends:
seconds, not minutes, so an outage or a SIGKILL never parks unknown outcomes for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from paysched import metrics
from paysched.backoff import delay
from paysched.clock import Clock
from paysched.db.store import Claim, Store
from paysched.domain import OccurrenceState, OutboxMessage
from paysched.events import Event, EventBus, EventKind
from paysched.executors.base import ExecutionResult, Outcome, Resolvable
from paysched.executors.claims import order_of
from paysched.notify.messages import NotifyPolicy, outbox_for
from paysched.queue import PaymentQueue
from paysched.threads import in_pool

log = logging.getLogger("paysched.resolver")
S = OccurrenceState
FIRST_INTERVAL = timedelta(seconds=2)
# How many occurrences one pass leases and asks about concurrently.
BATCH = 8
# A lookup that takes longer is abandoned (its occurrence is asked again later); the lease of
# a pass covers it with this margin for the database writes after it.
DEFAULT_LOOKUP_TIMEOUT = timedelta(seconds=60)
LEASE_MARGIN = timedelta(seconds=10)


def next_interval(checks: int, max_interval: timedelta) -> timedelta:
    """2 s, 4 s, 8 s ... doubling after each inconclusive check, capped at `max_interval`."""
    wait = delay(FIRST_INTERVAL.total_seconds(), checks + 1, cap=max_interval.total_seconds())
    return timedelta(seconds=wait)


class Resolver:
    def __init__(
        self,
        store: Store,
        executor: Resolvable,
        queue: PaymentQueue,
        bus: EventBus,
        clock: Clock,
        pool: ThreadPoolExecutor,
        notify: NotifyPolicy,
        max_attempts: int,
        window: timedelta,
        max_interval: timedelta,
        poll: timedelta = timedelta(seconds=1),
        lookup_timeout: timedelta = DEFAULT_LOOKUP_TIMEOUT,
        in_flight: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.executor = executor
        self.queue = queue
        self.bus = bus
        self.clock = clock
        self.pool = pool
        self.notify = notify
        self.max_attempts = max_attempts
        self.window = window
        self.max_interval = max_interval
        self.poll = poll
        self.lookup_timeout = lookup_timeout
        self.lease = lookup_timeout + LEASE_MARGIN
        # How long after it was sent a request may still be in flight at the provider.
        self.in_flight = in_flight

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                checked = await self.check_due()
            except Exception:
                log.exception("resolver pass failed; trying again shortly")
                checked = 0
            if not checked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll.total_seconds())

    async def check_due(self) -> int:
        """Ask about up to BATCH unknown occurrences whose next check is due, concurrently.
        Returns how many were leased."""
        claims = await in_pool(
            self.pool, self.store.execution.lease_unknowns, self.clock.now(), self.lease, BATCH
        )
        results = await asyncio.gather(*(self.check(c) for c in claims), return_exceptions=True)
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, Exception):  # paysched's own database or Redis failed
                log.warning(
                    "checking %s failed (%s: %s); it is asked again when its lease ends",
                    claim.occurrence.key,
                    type(result).__name__,
                    result,
                )
            elif isinstance(result, BaseException):
                raise result  # cancelled: stopping
        return len(claims)

    async def check(self, claim: Claim) -> None:
        began = time.monotonic()
        try:
            answer = await asyncio.wait_for(
                self.executor.lookup(order_of(claim)), self.lookup_timeout.total_seconds()
            )
        except TimeoutError:
            answer = ExecutionResult.unknown(f"lookup took longer than {self.lookup_timeout}")
        except Exception as exc:  # a lookup that breaks tells nothing: ask again later
            answer = ExecutionResult.unknown(f"lookup failed: {type(exc).__name__}: {exc}")
        name = getattr(self.executor, "name", type(self.executor).__name__)
        metrics.observe_executor(name, "lookup", time.monotonic() - began)
        now = self.clock.now()
        if answer.outcome == Outcome.SUCCEEDED:
            outbox = self._outbox(claim, "succeeded", None, now)
            if await self._resolve(claim, S.SUCCEEDED, None, outbox, answer.reference):
                self._emit(EventKind.COMPLETED, claim, reference=answer.reference)
        elif answer.outcome == Outcome.DECLINED:
            reason = answer.reason or "declined by the provider"
            if await self._resolve(
                claim, S.FAILED, reason, self._outbox(claim, "failed", reason, now)
            ):
                self._emit(EventKind.FAILED, claim, reason=reason)
        elif answer.outcome == Outcome.NOT_ATTEMPTED:
            sent = await in_pool(
                self.pool, self.store.reads.entered_at, claim.occurrence.id, S.EXECUTING
            )
            settled = (sent or now) + self.in_flight
            if now < settled:
                never = answer.reason or "the provider never received it"
                reason = (
                    f"{never}, but the request may still be in flight until "
                    f"{settled.isoformat(timespec='seconds')}"
                )
                await self._still_unknown(claim, ExecutionResult.unknown(reason), now, settled)
            else:
                await self._never_received(claim, answer, now)
        else:
            await self._still_unknown(claim, answer, now)

    async def _never_received(self, claim: Claim, answer: ExecutionResult, now: datetime) -> None:
        if claim.attempt >= self.max_attempts:
            never = answer.reason or "the provider never received it"
            reason = f"{never} (after {claim.attempt} attempts)"
            if await self._resolve(
                claim, S.FAILED, reason, self._outbox(claim, "failed", reason, now)
            ):
                self._emit(EventKind.FAILED, claim, reason=reason)
            return
        reason = f"{answer.reason or 'the provider never received it'}; sending it again"
        if not await self._resolve(claim, S.QUEUED, reason, []):
            return
        self._emit(EventKind.RESOLVED, claim, outcome="not_attempted")
        # The finished job keeps the key in Redis (dedup); replace it. If this process dies
        # first, reconcile finds the occurrence queued with a finished job and does the same.
        occurrence = await in_pool(self.pool, self.store.reads.get_occurrence, claim.occurrence.id)
        await self.queue.replace([occurrence], now)

    async def _still_unknown(
        self,
        claim: Claim,
        answer: ExecutionResult,
        now: datetime,
        not_before: datetime | None = None,
    ) -> None:
        since = await in_pool(
            self.pool, self.store.reads.entered_at, claim.occurrence.id, S.UNKNOWN
        )
        since = since or now
        reason = answer.reason or "the provider cannot tell yet"
        if now - since >= self.window:
            reason = f"outcome still unknown after {self.window}: {reason}"
            outbox = self._outbox(claim, "needs_review", reason, now)
            if await self._resolve(claim, S.NEEDS_REVIEW, reason, outbox):
                self._emit(EventKind.NEEDS_REVIEW, claim, reason=reason)
            return
        wait = next_interval(claim.occurrence.resolve_checks, self.max_interval)
        at = min(max(now + wait, not_before or now), since + self.window)
        log.info(
            "occurrence %s still unknown (%s); asking again at %s",
            claim.occurrence.key,
            reason,
            at.isoformat(timespec="seconds"),
        )
        await in_pool(self.pool, self.store.execution.recheck_later, claim, at, reason)

    async def _resolve(
        self,
        claim: Claim,
        target: OccurrenceState,
        reason: str | None,
        outbox: list[OutboxMessage],
        reference: str | None = None,
    ) -> bool:
        done = await in_pool(
            self.pool,
            self.store.execution.resolve,
            claim,
            target,
            self.clock.now(),
            reason,
            outbox,
            reference,
        )
        if done and target != S.QUEUED:
            self._emit(EventKind.RESOLVED, claim, outcome=target.value, by="resolver")
        return done

    def _outbox(
        self, claim: Claim, event: str, reason: str | None, now: datetime
    ) -> list[OutboxMessage]:
        return outbox_for(
            self.notify, event, claim.payment, claim.occurrence, claim.attempt, now, reason
        )

    def _emit(self, kind: EventKind, claim: Claim, **detail: object) -> None:
        self.bus.emit(
            Event(
                kind,
                self.clock.now(),
                claim.occurrence.key,
                claim.payment.id,
                claim.attempt,
                dict(detail),
            )
        )
