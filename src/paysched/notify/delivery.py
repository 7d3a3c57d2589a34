"""The delivery loop: sends outbox notifications with their own retries, apart from payments.

Guarantees: a notification committed with its payment's state change is sent until a channel
accepts it or says it never will (dead, with the reason). A deliverer that dies mid-send holds a
lease only until it runs out; then another sends it again with the same dedup key, so the one
window for a duplicate is a crash between the channel's acceptance and the commit of `sent` —
webhook receivers can close it by deduplicating on Paysched-Event-Id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import ParamSpec, TypeVar

from paysched import backoff
from paysched.clock import Clock
from paysched.db.outbox import Outbox
from paysched.domain import Notification
from paysched.errors import PermanentDelivery, RetryableDelivery
from paysched.events import Event, EventKind
from paysched.notify.base import NotifierRegistry
from paysched.threads import GroupCommit, in_pool

log = logging.getLogger("paysched.notify")
# After a payment's event wakes the deliverer, it waits this long before its pass.
WAKE_GATHER_S = 0.05
P = ParamSpec("P")
R = TypeVar("R")


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        registry: NotifierRegistry,
        clock: Clock,
        pool: ThreadPoolExecutor,
        *,
        poll: timedelta = timedelta(seconds=1),
        lease: timedelta = timedelta(seconds=60),
        send_deadline: timedelta | None = None,
        max_attempts: int = 10,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.registry = registry
        self.clock = clock
        self.pool = pool
        self.poll = poll
        self.lease = lease
        # One send, whole: the channels' own timeouts bound each connect and read, not a
        # receiver that trickles its answer a byte at a time. Half the lease, so that a slow
        # send is given up before another deliverer may take the notification over.
        self.send_deadline = send_deadline or lease / 2
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        # Sends that end together are recorded in one transaction (see GroupCommit): one write
        # transaction per notification was as many as the payments themselves took.
        self._sent: GroupCommit[int, None] = GroupCommit(pool, self._mark_sent)

    def _mark_sent(self, notification_ids: list[int]) -> list[None]:
        self.outbox.mark_sent(notification_ids, self.clock.now())
        return [None] * len(notification_ids)

    async def _db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await in_pool(self.pool, fn, *args, **kwargs)

    def on_event(self, event: Event) -> None:
        """Event-bus subscriber: a state change may have written notifications; look now."""
        if event.kind in (EventKind.COMPLETED, EventKind.FAILED, EventKind.RETRYING):
            self._wake.set()

    def backoff_s(self, attempts: int) -> float:
        wait = backoff.delay(
            self.backoff_base_s, attempts, cap=self.backoff_max_s, jitter=0.2, rng=self.rng
        )
        return float(wait)

    async def deliver_due(self) -> int:
        """Send every notification due now (one lease batch at a time). Returns how many were
        attempted."""
        total = 0
        while True:
            batch = await self._db(self.outbox.lease_due, self.clock.now(), self.lease)
            if not batch:
                return total
            await asyncio.gather(*(self._deliver(n) for n in batch))
            total += len(batch)

    async def _deliver(self, n: Notification) -> bool:
        """Send one notification and record the outcome at once; True when the channel
        accepted it."""
        try:
            notifier = self.registry.get(n.channel)
            await asyncio.wait_for(
                notifier.send(n.target, json.loads(n.payload), n.dedup_key),
                self.send_deadline.total_seconds(),
            )
        except TimeoutError:
            why = f"no answer within {self.send_deadline.total_seconds():g} s"
            await self._retry_later(n, why, None)
            return False
        except PermanentDelivery as exc:
            log.warning("notification %s to %s is dead: %s", n.id, n.channel, exc)
            await self._db(self.outbox.mark_dead, n.id, str(exc))
            return False
        except RetryableDelivery as exc:
            await self._retry_later(n, str(exc), exc.retry_after)
            return False
        except Exception as exc:  # a bug in a channel must not stop the loop
            await self._retry_later(n, f"{type(exc).__name__}: {exc}", None)
            return False
        # Recorded as soon as it is sent, not with its lease batch: a batch waited for its
        # slowest receiver, its lease ran out meanwhile, and another deliverer sent the rest
        # again. Sends that finish while a record is being written share the next one.
        await self._sent.submit(n.id)
        log.debug("notification %s sent via %s", n.id, n.channel)
        return True

    async def _retry_later(self, n: Notification, error: str, retry_after: float | None) -> None:
        if n.attempts >= self.max_attempts:
            reason = f"gave up after {n.attempts} attempts: {error}"
            log.warning("notification %s to %s is dead: %s", n.id, n.channel, reason)
            await self._db(self.outbox.mark_dead, n.id, reason)
            return
        # The channel's own Retry-After wins over our backoff: sending earlier only earns
        # another 429.
        delay = retry_after if retry_after is not None else self.backoff_s(n.attempts)
        log.info(
            "notification %s to %s failed (%s); retrying in %.1fs", n.id, n.channel, error, delay
        )
        await self._db(
            self.outbox.reschedule, n.id, self.clock.now() + timedelta(seconds=delay), error
        )

    async def run(self, stop: asyncio.Event) -> None:
        log.info("notification delivery started: channels %s", ", ".join(self.registry.channels))
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception:
                log.exception("notification delivery pass failed; retrying")
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(
                waiters, timeout=self.poll.total_seconds(), return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
            if self._wake.is_set() and not stop.is_set():
                # Woken by a payment: let the ones finishing with it write theirs too, and
                # send them in one pass. Under load every completion woke a pass of its own
                # (a read, a lease and a record of sends for a notification or two each).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), WAKE_GATHER_S)
        # One last pass for what the final payments wrote; what fails stays pending for the
        # next process, nothing is lost.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.deliver_due(), timeout=10)
        log.info("notification delivery stopped")
