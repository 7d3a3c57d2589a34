"""The composition root: turns Settings into connected parts and starts/stops them.

The CLI, the demo and the tests all wire paysched through `App.open`; nothing else constructs
the queue, executor, scheduler or worker. The store is set up by db.setup, here and for the
CLI's commands that need only the database or only a count (paysched.reads), which must start
in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection

from paysched import approvals, metrics
from paysched.actors import Actor
from paysched.backends import probe_redis, redacted, resolve_redis
from paysched.backoff import Backoff, delay
from paysched.clock import Clock, SystemClock
from paysched.config import Settings
from paysched.db.actions import (
    Acting,
    Subject,
    account_subject,
    approval_rule_subject,
    deposit_subject,
    notification_subject,
)
from paysched.db.outbox import Outbox
from paysched.db.setup import connect_store
from paysched.db.store import CancelResult, Store
from paysched.db.store.approvals import Decided
from paysched.db.store.base import AfterWrite, short_error
from paysched.db.store.control import Held
from paysched.domain import (
    Account,
    Notification,
    Occurrence,
    OccurrenceState,
    Payment,
    check_text,
)
from paysched.errors import BackendUnavailable, ConfigError, Conflict, DatabaseError, InvalidInput
from paysched.events import Event, EventBus, EventKind, log_subscriber
from paysched.executors.base import Closable, Executor, Resolvable
from paysched.executors.claims import adapted
from paysched.executors.ledger import LedgerExecutor
from paysched.executors.resolver import DEFAULT_LOOKUP_TIMEOUT, Resolver
from paysched.heartbeat import Heartbeat, processes_key, read_processes
from paysched.inputs import parse_approval_above, parse_remind_setting
from paysched.notify.base import Notifier, NotifierRegistry
from paysched.notify.delivery import Deliverer
from paysched.notify.log import LogNotifier
from paysched.notify.messages import NotifyPolicy
from paysched.notify.telegram import TelegramNotifier
from paysched.notify.webhook import WebhookNotifier
from paysched.queue import PaymentQueue
from paysched.recurrence import Due
from paysched.redis_server import EmbeddedRedis
from paysched.scheduler import MATERIALIZE_BATCH, Scheduler
from paysched.threads import in_pool
from paysched.views import occurrence_view
from paysched.worker import PaymentProcessor, WorkerPool

if TYPE_CHECKING:
    from paysched.db.store.reconcile import Reconciliation
    from paysched.reconcile import Reconciler

log = logging.getLogger("paysched.app")
P = ParamSpec("P")
R = TypeVar("R")

ExecutorFactory = Callable[["App"], Executor]

# Redis and the database are found and probed in paysched.backends; named here too, as before.
__all__ = ["App", "default_executor", "probe_redis", "redacted", "resolve_redis"]

# A service waiting for a backend tries again at least this often.
REDIS_RETRY_CAP_S = 5.0


async def until_available(what: str, attempt: Callable[[], Awaitable[object]]) -> None:
    """A long-running process waits for a backend: `attempt` again with backoff up to every
    5 s, saying so once when it starts waiting and once when the backend answers."""
    failures = 0
    waited_since: float | None = None
    while True:
        try:
            await attempt()
        except (BackendUnavailable, DatabaseError, OSError) as exc:
            if waited_since is None:
                waited_since = time.monotonic()
                log.warning(
                    "%s unavailable (%s); retrying every %g s at most until it answers",
                    what,
                    short_error(exc),
                    REDIS_RETRY_CAP_S,
                )
            failures += 1
            await asyncio.sleep(delay(0.2, failures, cap=REDIS_RETRY_CAP_S))
            continue
        if waited_since is not None:
            log.warning("%s answers again after %.0f s", what, time.monotonic() - waited_since)
        return


# How long a create waits to queue what it made due soon. Beyond that the payment, already
# committed, is answered as it is and the scheduler's next tick queues it.
CREATE_ENQUEUE_WAIT_S = 5.0
# A scheduled reconciliation still running this long after it started is taken to be dead
# (its process stopped mid-run) and its day is run again: a day reconciles in minutes.
RECONCILE_STALE = timedelta(hours=1)

# Every database call runs on the thread pool, so its size bounds the connections a process
# opens. Beyond ~20 threads a 2-core machine only adds GIL and lock contention, and at
# concurrency 200 one connection per job would exceed PostgreSQL's default 100 connections.
# Jobs waiting on a slow executor hold no thread.
MAX_DB_THREADS = 20


@dataclass
class App:
    settings: Settings
    clock: Clock
    store: Store
    pool: ThreadPoolExecutor
    bus: EventBus
    backoff: Backoff
    redis_url: str | None = None
    embedded: EmbeddedRedis | None = None
    queue: PaymentQueue | None = None
    executor: Executor | None = None
    scheduler: Scheduler | None = None
    processor: PaymentProcessor | None = None
    outbox: Outbox | None = None
    deliverer: Deliverer | None = None
    resolver: Resolver | None = None
    heartbeat: Heartbeat | None = None
    # Reconciliations asked for over the API, running in the background (see reconcile.py).
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        with_queue: bool = True,
        wait_for_backends: bool = False,
        executor_factory: ExecutorFactory | None = None,
        rng: random.Random | None = None,
        migrate: bool = True,
    ) -> App:
        """Connect the parts. The schema is brought to the head revision, unless `migrate` is
        off: then a database of an older revision is SchemaMismatch (a fresh, empty one is
        still migrated), so that a command that only reads never changes the schema."""
        clock = clock or SystemClock()
        db_threads = min(settings.concurrency + 4, MAX_DB_THREADS)
        pool = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix="paysched-db")
        # connect_store masks the settings' secrets in every log record: whoever opens an app
        # (CLI, worker, test, chaos node), its secrets never reach a log.
        store = connect_store(settings, pool_size=db_threads + 1)
        # The schema first: a database that is unavailable or of the wrong revision fails here,
        # before anything else is connected.
        prepare = functools.partial(
            asyncio.get_running_loop().run_in_executor,
            pool,
            functools.partial(store.ensure_schema, migrate=migrate),
        )
        try:
            if wait_for_backends:
                await until_available("the database", prepare)
            else:
                await prepare()
        except BaseException:
            store.close()
            pool.shutdown(wait=False)
            raise
        bus = EventBus()
        bus.subscribe(log_subscriber)
        bus.subscribe(metrics.on_event)
        backoff = Backoff(settings.backoff_ms, settings.backoff_jitter, rng or random.Random())
        app = cls(settings, clock, store, pool, bus, backoff)
        app.outbox = Outbox(store.engine)
        store.payments.approval_outbox = approvals.needed_outbox(settings.notify_default, clock.now)
        if not with_queue:
            return app
        # Started here, on the event loop's (main) thread: see EmbeddedRedis.
        redis_url, app.embedded = resolve_redis(settings)
        app.redis_url = redis_url
        if app.embedded is None:
            log.info("using Redis at %s", redacted(redis_url))
        deployment_id = await app.db(store.deployment_id)
        app.queue = PaymentQueue(
            app.redis_url,
            settings.queue_name,
            settings.queue_prefix,
            settings.attempts,
            backoff,
            settings.keep_completed,
            deployment_id,
        )
        app.queue.read_summaries = app._job_summaries
        try:
            if wait_for_backends:
                await until_available("Redis", lambda: probe_redis(redis_url))
            else:
                await probe_redis(redis_url)
            await app.queue.ping()
        except BackendUnavailable:
            await app.close()
            raise
        except Exception as exc:
            await app.close()
            raise BackendUnavailable(
                f"Redis at {redacted(app.redis_url)}: {short_error(exc)}"
            ) from exc
        app.heartbeat = Heartbeat(
            app.queue.redis,
            processes_key(settings.queue_prefix, settings.queue_name),
            settings.queue_name,
            clock,
        )
        try:
            # adapted: an executor written to the contract before PaymentOrder works on.
            app.executor = adapted((executor_factory or default_executor)(app))
        except BaseException:
            await app.close()
            raise
        policy = NotifyPolicy(settings.notify_events, settings.notify_default)
        app.scheduler = Scheduler(
            store, app.queue, clock, settings.lookahead, settings.tick_cron, pool, policy
        )
        app.scheduler.expired_outbox = approvals.expired_outbox(settings.notify_default, clock.now)
        app.processor = PaymentProcessor(
            store,
            app.executor,
            bus,
            clock,
            backoff,
            settings.attempts,
            pool,
            policy,
            deployment_id,
        )
        if isinstance(app.executor, Resolvable):
            app.resolver = Resolver(
                store,
                app.executor,
                app.queue,
                bus,
                clock,
                pool,
                policy,
                settings.attempts,
                settings.resolve_window,
                settings.resolve_max_interval,
                lookup_timeout=lookup_timeout(settings),
                in_flight=in_flight(settings),
            )
        app.deliverer = Deliverer(
            app.outbox,
            build_registry(settings),
            clock,
            pool,
            poll=settings.notify_poll,
            max_attempts=settings.notify_max_attempts,
        )
        bus.subscribe(app.deliverer.on_event)
        return app

    async def close(self) -> None:
        for task in list(self._background):  # each marks its report failed ("interrupted")
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if isinstance(self.executor, Closable):
            await self.executor.aclose()
        if self.deliverer is not None:
            await self.deliverer.registry.close()
        if self.queue is not None:
            await self.queue.close()
        self.store.close()
        self.pool.shutdown(wait=False)
        if self.embedded is not None:
            self.embedded.stop()

    async def db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await in_pool(self.pool, fn, *args, **kwargs)

    async def read(
        self, fn: Callable[Concatenate[Store, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """A read of the store (paysched.reads, or a Store method), on the database threads:
        how the API and the dashboard read what the CLI reads on its own store."""
        return await in_pool(self.pool, fn, self.store, *args, **kwargs)

    async def _job_summaries(self, payment_ids: Sequence[int]) -> dict[int, str]:
        return await self.db(self.store.payments.job_summaries, payment_ids)

    def _need_queue(self) -> tuple[PaymentQueue, Scheduler]:
        if self.queue is None or self.scheduler is None:
            raise RuntimeError("App opened without a queue")
        return self.queue, self.scheduler

    # -- operations -------------------------------------------------------------------------

    async def create_payment(self, *, actor: Actor, **fields: Any) -> Payment:
        """Store the payment, then enqueue at once whatever of it falls inside the window
        (`then=`: see create_payment_from)."""
        then: AfterWrite | None = fields.pop("then", None)
        return await self.create_payment_from(lambda _: fields, actor=actor, then=then)

    async def create_payment_from(
        self,
        fields_of: Callable[[Callable[[str], Account]], dict[str, Any]],
        *,
        actor: Actor,
        first: Callable[[Connection], None] | None = None,
        then: AfterWrite | None = None,
    ) -> Payment:
        """Store the payment and make whatever of it falls inside the window, in one
        transaction (see Payments.create_and_materialize: `fields_of`, `first`, `then`), then
        enqueue that. `actor` is recorded as its creator in the same transaction.

        Once the payment is committed it is the answer: the enqueue is best-effort and bounded
        (CREATE_ENQUEUE_WAIT_S). An error after the commit made the caller retry and schedule
        the payment twice; what is left `scheduled` here is enqueued by the scheduler's next
        tick (reconcile), and what was not materialized by its next materialize."""
        _, scheduler = self._need_queue()
        now = self.clock.now()
        acting = Acting(actor, "create", now, lambda p: Subject(p.id))
        created = await self.db(
            self.store.payments.create_and_materialize,
            fields_of,
            now=now,
            horizon=now + scheduler.lookahead,
            limit=MATERIALIZE_BATCH,
            missed_outbox=scheduler.missed_outbox,
            first=first,
            then=acting.then(then),
        )
        acting.logged()
        payment = created.payment

        async def enqueue() -> None:
            await scheduler.enqueue_made(created.occurrences, now, {payment.id: payment})
            if created.capped:  # more fell due than one transaction makes
                await scheduler.schedule_now([payment.id])

        try:
            # redis-py retries a lost Redis for ~5 minutes: the caller must not wait for that.
            await asyncio.wait_for(enqueue(), CREATE_ENQUEUE_WAIT_S)
        except Exception as exc:
            reason = (
                f"no answer within {CREATE_ENQUEUE_WAIT_S:g} s"
                if isinstance(exc, TimeoutError)
                else short_error(exc)
            )
            log.warning(
                "payment %s is stored but not yet queued (%s); the scheduler's next tick queues it",
                payment.id,
                reason,
            )
        return payment

    async def cancel_payment(
        self, payment_id: int, then: AfterWrite | None = None, *, actor: Actor
    ) -> CancelResult:
        """Cancel the payment: none of its occurrences that have not started will execute;
        those executing (or whose outcome is being resolved) finish and are reported."""
        queue, _ = self._need_queue()
        now = self.clock.now()
        acting = Acting(actor, "cancel", now, lambda _: Subject(payment_id))
        result = await self.db(
            self.store.control.cancel_payment,
            payment_id,
            now,
            "cancelled by user",
            acting.then(then),
        )
        acting.logged()
        for occ in result.cancelled:
            # An active job cannot be removed; its claim will find the payment cancelled.
            await queue.remove(occ.key)
        return result

    async def pause_payment(
        self, payment_id: int, then: AfterWrite | None = None, *, actor: Actor
    ) -> Held:
        """Nothing of the payment starts until it is resumed (see Control.pause). Without
        a queue (the bot's own process) its jobs stay: a claim refuses them all the same."""
        now = self.clock.now()
        acting = Acting(actor, "pause", now, lambda _: Subject(payment_id))
        held = await self.db(self.store.control.pause, payment_id, now, acting.then(then))
        acting.logged()
        if self.queue is not None:
            for occ in held.occurrences:  # a job already taken is refused by its claim
                await self.queue.remove(occ.key)
        return held

    async def resume_payment(
        self, payment_id: int, then: AfterWrite | None = None, *, actor: Actor
    ) -> Held:
        """Active again: what fell due meanwhile runs or is missed by its catch-up policy,
        what is due next is enqueued."""
        queue, scheduler = self._need_queue()
        now = self.clock.now()
        acting = Acting(actor, "resume", now, lambda _: Subject(payment_id))
        held = await self.db(
            self.store.control.resume, payment_id, now, scheduler.missed_outbox, acting.then(then)
        )
        acting.logged()
        # What fell due while paused and was never created is created now, under the same
        # policy (which may now mark a held one missed: "latest" is over all of them).
        await scheduler.schedule_now([payment_id])
        waiting = {o.id: o for o in await self.db(self.store.reads.occurrences_of, payment_id)}
        release = [
            waiting[o.id]
            for o in held.occurrences
            if waiting[o.id].state in (OccurrenceState.SCHEDULED, OccurrenceState.QUEUED)
        ]
        # Its job may have finished as "paused" and still be kept: a new one replaces it.
        await queue.replace(release, now)
        # A retrying one whose job came back while paused ended that job refused; it runs now
        # (not at the next reconcile, up to a minute later). One still waiting out its backoff
        # keeps its job and its delay.
        retrying = [o for o in waiting.values() if o.state == OccurrenceState.RETRYING]
        release += await scheduler.requeue(retrying, now)
        return replace(held, occurrences=release)

    async def skip_next(
        self, payment_id: int, then: AfterWrite | None = None, *, actor: Actor
    ) -> Occurrence:
        """Skip the payment's next occurrence (it is recorded as skipped)."""
        queue, _ = self._need_queue()
        now = self.clock.now()
        acting = Acting(actor, "skip_next", now, lambda o: Subject(payment_id, o.id))
        skipped = await self.db(
            self.store.control.skip_next, payment_id, now, "skipped by user", acting.then(then)
        )
        acting.logged()
        await queue.remove(skipped.key)
        return skipped

    async def skip_occurrence(
        self, payment_id: int, due_at: datetime, *, actor: Actor
    ) -> Occurrence:
        """Skip the payment's occurrence due at `due_at` and only it (a reminder's Skip; see
        Control.skip_occurrence). Without a queue its job, if any, stays: a claim
        refuses a skipped occurrence."""
        now = self.clock.now()
        acting = Acting(actor, "skip", now, lambda o: Subject(payment_id, o.id))
        skipped = await self.db(
            self.store.control.skip_occurrence,
            payment_id,
            due_at,
            now,
            "skipped by user",
            acting.then(),
        )
        acting.logged()
        if self.queue is not None:
            await self.queue.remove(skipped.key)
        return skipped

    async def upcoming(self, payment_id: int, count: int) -> list[Due]:
        """The payment's next `count` due times."""
        if not 1 <= count <= 1000:
            raise InvalidInput("count", f"expected 1-1000, got {count}")
        return await self.db(self.store.control.upcoming, payment_id, count)

    async def find_occurrence(self, ref: str) -> Occurrence:
        """By id (digits) or by key."""
        if ref.isascii() and ref.isdigit():  # 0 or past any id: not found, like a key
            return await self.db(self.store.reads.get_occurrence, int(ref))
        return await self.db(self.store.reads.find_occurrence, ref)

    async def occurrence_detail(self, ref: str) -> dict[str, Any]:
        occurrence = await self.find_occurrence(ref)
        history = await self.db(self.store.reads.transitions_of, [occurrence.id])
        return occurrence_view(occurrence, history)

    async def resolve_occurrence(
        self,
        ref: str,
        outcome: str,
        reason: str,
        then: AfterWrite | None = None,
        *,
        actor: Actor,
    ) -> OccurrenceState:
        """A person settles an unknown or needs_review occurrence: `succeeded` or `failed`
        (what the provider says happened), or `retry` (send it again with the same key)."""
        queue, _ = self._need_queue()
        occurrence = await self.find_occurrence(ref)
        targets = {
            "succeeded": OccurrenceState.SUCCEEDED,
            "failed": OccurrenceState.FAILED,
            "retry": OccurrenceState.QUEUED,
        }
        if outcome not in targets:
            raise InvalidInput("outcome", f"expected succeeded, failed or retry, got {outcome!r}")
        if not reason.strip():
            raise InvalidInput("reason", "say why (it is kept in the occurrence's history)")
        check_text(reason, "reason")
        claim = await self.db(self.store.execution.unresolved, occurrence.id)
        state = claim.occurrence.state
        if state not in (OccurrenceState.UNKNOWN, OccurrenceState.NEEDS_REVIEW):
            raise Conflict(
                f"occurrence {claim.occurrence.key} is {state.value}; only unknown or "
                "needs_review occurrences are resolved by hand"
            )
        target = targets[outcome]
        if target == OccurrenceState.SUCCEEDED and isinstance(self.executor, LedgerExecutor):
            raise Conflict(
                "the ledger executor moves money itself, in the same transaction as 'succeeded';"
                " nothing moved for this occurrence: use --retry or --failed"
            )
        assert self.processor is not None
        now = self.clock.now()
        note = f"resolved by hand: {reason.strip()}"
        event = {OccurrenceState.SUCCEEDED: "succeeded", OccurrenceState.FAILED: "failed"}
        outbox = (
            self.processor._outbox(claim, event[target], reason.strip()) if target in event else []
        )
        # The reason is kept in the occurrence's history and, with the key that gave it, here.
        detail: dict[str, str | int] = {"outcome": outcome, "reason": reason.strip()}
        subject = Subject(claim.payment.id, claim.occurrence.id, detail)
        acting = Acting(actor, "resolve", now, lambda _: subject)
        resolved = await self.db(
            self.store.execution.resolve, claim, target, now, note, outbox, None, acting.then(then)
        )
        if not resolved:
            raise Conflict(f"occurrence {claim.occurrence.key} changed meanwhile; try again")
        acting.logged()
        self.bus.emit(
            Event(
                EventKind.RESOLVED,
                now,
                claim.occurrence.key,
                claim.payment.id,
                claim.attempt,
                {"outcome": target.value, "by": "hand"},
            )
        )
        if target == OccurrenceState.QUEUED:
            fresh = await self.db(self.store.reads.get_occurrence, claim.occurrence.id)
            await queue.replace([fresh], now)
        return target

    async def decide_occurrence(
        self,
        ref: str,
        approve: bool,
        reason: str = "",
        then: AfterWrite | None = None,
        *,
        actor: Actor,
    ) -> Occurrence:
        """Approve (scheduled, then queued as a materialized one is) or reject (cancelled,
        with `reason`) an occurrence awaiting approval, by id or key; Conflict if it awaits
        none any more or `actor` created its payment (see Approvals.decide)."""
        if not approve:
            check_text(reason, "reason")
        occurrence = await self.find_occurrence(ref)
        return (await self.decide(occurrence.id, approve, reason, then, actor=actor)).occurrence

    async def decide(
        self,
        occurrence_id: int,
        approve: bool,
        reason: str = "",
        then: AfterWrite | None = None,
        *,
        actor: Actor,
    ) -> Decided:
        """The decision (every caller's: the API, the CLI, the dashboard, the chat's buttons),
        recorded as `actor`'s; an approved occurrence is queued at once when this App has a
        queue, else (`paysched bot`) by the scheduler's next tick."""
        now = self.clock.now()
        detail: dict[str, str | int] = {} if approve else {"reason": reason.strip()}

        def subject(d: Decided) -> Subject:
            return Subject(d.payment.id, d.occurrence.id, detail)

        acting = (
            Acting(actor, "approve", now, subject)
            if approve
            else Acting(actor, "reject", now, subject)
        )
        decided = await self.db(
            self.store.approvals.decide,
            occurrence_id,
            approve,
            actor,
            now,
            reason,
            acting.then(then),
        )
        acting.logged()
        if not approve or self.scheduler is None:
            return decided
        payment = decided.payment
        try:  # committed: a failed enqueue is the next tick's (reconcile) to make good
            await asyncio.wait_for(
                self.scheduler.enqueue_made([decided.occurrence], now, {payment.id: payment}),
                CREATE_ENQUEUE_WAIT_S,
            )
        except Exception as exc:
            log.warning(
                "occurrence %s is approved but not yet queued (%s); the "
                "scheduler's next tick queues it",
                decided.occurrence.key,
                short_error(exc),
            )
        queued = await self.db(self.store.reads.get_occurrence, decided.occurrence.id)
        return replace(decided, occurrence=queued)

    async def retry_notification(
        self, notification_id: int, then: AfterWrite | None = None, *, actor: Actor
    ) -> Notification:
        """Send a dead notification again with a fresh set of attempts."""
        assert self.outbox is not None  # App.open always makes it
        now = self.clock.now()
        acting = Acting(actor, "retry_notification", now, notification_subject)
        notification = await self.db(self.outbox.retry, notification_id, now, acting.then(then))
        acting.logged()
        return notification

    async def create_account(
        self,
        name: str,
        currency: str,
        then: AfterWrite | None = None,
        *,
        actor: Actor,
        remind: timedelta | None = None,
    ) -> Account:
        now = self.clock.now()
        acting = Acting(actor, "create_account", now, account_subject)
        account = await self.db(
            self.store.accounts.create_account, name, currency, now, acting.then(then), remind
        )
        acting.logged()
        return account

    async def set_account_remind(
        self, name: str, remind: timedelta | None, *, actor: Actor
    ) -> Account:
        """The account's reminder default (None: off) for the payments created from now on."""
        acting = Acting(actor, "set_account", self.clock.now(), account_subject)
        account = await self.db(self.store.accounts.set_account_remind, name, remind, acting.then())
        acting.logged()
        return account

    async def change_account(
        self, name: str, changes: Mapping[str, str | None], *, actor: Actor
    ) -> Account:
        """Change an account's settings as given in text (the API's PATCH, the dashboard's
        form): `remind` (a duration; None or 'off': none) and `approval_above` (an amount in
        its currency; None or 'off': none). Every value is checked before anything is
        written; only the settings given change."""
        unknown = sorted(set(changes) - {"remind", "approval_above"})
        if unknown:
            raise InvalidInput(unknown[0], "not a setting of an account")
        if not changes:
            raise InvalidInput("remind", "give a setting to change: remind or approval_above")
        remind = parse_remind_setting(changes["remind"]) if "remind" in changes else None
        account = await self.db(self.store.accounts.get_account, name)
        above = (
            parse_approval_above(changes["approval_above"], account.currency)
            if "approval_above" in changes
            else None
        )
        if "remind" in changes:
            account = await self.set_account_remind(account.name, remind, actor=actor)
        if "approval_above" in changes:
            account = await self.set_approval_above(account.name, above, actor=actor)
        return account

    async def set_approval_above(self, name: str, minor: int | None, *, actor: Actor) -> Account:
        """The account's approval rule (None: off): its payments created from now on above
        `minor` require approval."""
        acting = Acting(actor, "set_account", self.clock.now(), approval_rule_subject(minor))
        account = await self.db(self.store.approvals.set_approval_above, name, minor, acting.then())
        acting.logged()
        return account

    async def deposit(
        self, name: str, minor: int, then: AfterWrite | None = None, *, actor: Actor
    ) -> Account:
        now = self.clock.now()
        acting = Acting(actor, "deposit", now, deposit_subject(minor))
        account = await self.db(self.store.accounts.deposit, name, minor, now, acting.then(then))
        acting.logged()
        return account

    def reconciler(self, page_size: int | None = None, notify: bool = False) -> Reconciler:
        """The reconciliation of this app's executor (see paysched.reconcile); `notify`: a
        report with discrepancies notifies PAYSCHED_RECONCILE_NOTIFY (the scheduled ones)."""
        from paysched.reconcile import PAGE, Reconciler

        policy = NotifyPolicy(self.settings.notify_events, self.settings.notify_default)
        return Reconciler(
            self.store,
            self.executor,
            self.pool,
            self.clock,
            bus=self.bus,
            policy=policy,
            notify_targets=self.settings.reconcile_notify if notify else (),
            page_size=page_size or PAGE,
        )

    async def start_reconciliation(
        self,
        period_from: datetime,
        period_to: datetime,
        *,
        actor: Actor,
        resolve: bool = False,
        then: AfterWrite | None = None,
    ) -> Reconciliation:
        """A reconciliation started now (its report answered running) and carried out in the
        background: the caller follows its report until it is done or failed."""
        from paysched.reconcile import Period, started_by

        reconciler = self.reconciler()
        reports = reconciler.reports
        now = self.clock.now()
        acting = started_by(actor, now, resolve)
        start = functools.partial(reports.start, then=acting.then(then))
        rid = await self.db(start, period_from, period_to, "api", actor.describe(), None, now)
        acting.logged()
        assert rid is not None  # no dedup key: always a new report
        report = await self.db(reports.get, rid)
        task = asyncio.create_task(
            reconciler.complete(rid, Period(period_from, period_to), resolve=resolve, by=actor)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return report

    async def scheduled_reconcile(self, fired_at: datetime) -> Reconciliation | None:
        """The scheduled reconciliation of the UTC day before `fired_at`; None when another
        process has it already (one per day across processes: its dedup key)."""
        from paysched.reconcile import previous_day

        start, end = previous_day(fired_at)
        key = f"schedule:{start.date().isoformat()}"
        reconciler = self.reconciler(notify=True)
        # A day whose report failed, or whose process died running it, is run again.
        now = self.clock.now()
        await self.db(reconciler.reports.release, key, now - RECONCILE_STALE, now)
        return await reconciler.run(start, end, trigger="schedule", dedup_key=key)

    async def _reconcile_on_schedule(self, stop: asyncio.Event) -> None:
        """PAYSCHED_RECONCILE_CRON: reconcile the previous day at each fire time."""
        from paysched.schedules import last_cron, next_cron

        cron = self.settings.reconcile_cron
        # The latest fire time first: a fire missed while no process ran, or a day whose
        # report failed or was left running by a process that died, is caught up at start
        # (a day already done is one dedup-key lookup).
        try:
            await self.scheduled_reconcile(last_cron(cron, self.clock.now()))
        except Exception:
            log.exception("scheduled reconciliation failed")
        while not stop.is_set():
            fire = next_cron(cron, self.clock.now())
            wait = (fire - self.clock.now()).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(wait, 0.0))
            if stop.is_set():
                return
            try:
                await self.scheduled_reconcile(fire)
            except Exception:  # the database away: the next fire time tries again
                log.exception("scheduled reconciliation failed")

    async def stats(self) -> dict[str, Any]:
        queue, _ = self._need_queue()
        assert self.outbox is not None
        return {
            "queue": await queue.counts(),
            "occurrences": await self.db(self.store.reads.occurrence_counts),
            "notifications": await self.db(self.outbox.counts),
            "processes": await self.processes(),
        }

    async def run(
        self,
        stop: asyncio.Event,
        *,
        scheduler: bool = True,
        worker: bool = True,
        deliver: bool | None = None,
    ) -> None:
        """Run the scheduler and/or the worker pool (with notification delivery, unless
        `deliver` says otherwise) until `stop` is set, then shut down gracefully: stop taking
        jobs, let active ones finish within the grace period, send what they notified."""
        queue, sched = self._need_queue()
        assert self.processor is not None
        pool: WorkerPool | None = None
        if worker:
            pool = WorkerPool(
                queue, self.processor, self.settings.concurrency, self.settings.lock_ms
            )
            await pool.start()
        tasks = [asyncio.create_task(self._announce(stop))]
        # Each role beats while its loop runs (see heartbeat.py).
        roles: dict[str, Callable[[], bool]] = {}
        if pool is not None:
            roles["worker"] = lambda: pool.alive
        if scheduler:
            tasks.append(asyncio.create_task(sched.run_forever(stop)))
            roles["scheduler"] = _running(tasks[-1])
        if scheduler and self.settings.reconcile_cron:
            tasks.append(asyncio.create_task(self._reconcile_on_schedule(stop)))
        if worker and self.resolver is not None:
            tasks.append(asyncio.create_task(self.resolver.run(stop)))
            roles["resolver"] = _running(tasks[-1])
        deliver_stop = asyncio.Event()
        if (worker if deliver is None else deliver) and self.deliverer is not None:
            tasks.append(asyncio.create_task(self.deliverer.run(deliver_stop)))
            roles["delivery"] = _running(tasks[-1])
        assert self.heartbeat is not None  # made with the queue
        async with self.heartbeat.beating(roles):
            await stop.wait()
            if pool is not None:
                await pool.stop(self.settings.shutdown_grace.total_seconds())
            # Delivery stops last, so the notifications of the payments that just finished
            # go out.
            deliver_stop.set()
            await asyncio.gather(*tasks)

    async def processes(self) -> list[dict[str, Any]]:
        """Every paysched process role of this queue seen within a day (heartbeat.py)."""
        queue, _ = self._need_queue()
        key = processes_key(self.settings.queue_prefix, self.settings.queue_name)
        return await read_processes(queue.redis, key, self.clock.now())

    async def _announce(self, stop: asyncio.Event, every_s: float = 60.0) -> None:
        """Tell the queue this deployment uses it, every minute; complain loudly if another
        deployment (another database) uses the same queue: each would refuse the other's jobs."""
        queue, _ = self._need_queue()
        while not stop.is_set():
            try:
                others = await queue.announce(self.clock.now())
                if others:
                    log.error(
                        "queue %s is shared with other paysched deployment(s) %s: give each "
                        "deployment its own PAYSCHED_QUEUE or Redis database",
                        queue.name,
                        ", ".join(others),
                    )
            except Exception as exc:  # Redis away: the queue reports that on its own
                log.debug("announce failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


def _running(task: asyncio.Task[Any]) -> Callable[[], bool]:
    return lambda: not task.done()


def default_executor(app: App) -> Executor:
    """The executor PAYSCHED_EXECUTOR names: ledger, http, or package.module:factory."""
    settings = app.settings
    if settings.executor == "ledger":
        return LedgerExecutor(app.store, app.clock, app.pool)
    if settings.executor == "http":
        from paysched.executors.http import HttpExecutor

        return HttpExecutor(
            settings.provider_url,
            settings.provider_token,
            connect_timeout_s=settings.provider_connect_timeout.total_seconds(),
            read_timeout_s=settings.provider_timeout.total_seconds(),
            # Every job at once, and the resolver's lookups beside them.
            connections=settings.concurrency + LOOKUP_CONNECTIONS,
        )
    return plugin_executor(settings)


LOOKUP_CONNECTIONS = 8


def lookup_timeout(settings: Settings) -> timedelta:
    """How long one lookup may take: the HTTP executor's own timeouts, with room for a retry
    of its connect; a user's executor gets the resolver's default."""
    if settings.executor == "http":
        return 2 * (settings.provider_connect_timeout + settings.provider_timeout)
    return DEFAULT_LOOKUP_TIMEOUT


def in_flight(settings: Settings) -> timedelta:
    """How long after it was sent a payment request may still be in flight at the provider:
    the HTTP executor's pool wait and connect, then its write and its wait for the answer. A
    user's executor answers for its own lookups."""
    if settings.executor == "http":
        return 2 * (settings.provider_connect_timeout + settings.provider_timeout)
    return timedelta(0)


def plugin_executor(settings: Settings) -> Executor:
    """The user's own executor: `package.module:factory`, called with the settings."""
    module_name, _, factory_name = settings.executor.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("PAYSCHED_EXECUTOR", f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ConfigError("PAYSCHED_EXECUTOR", f"{module_name!r} has no callable {factory_name!r}")
    executor = factory(settings)
    if not callable(getattr(executor, "execute", None)):
        raise ConfigError(
            "PAYSCHED_EXECUTOR",
            f"{settings.executor} returned {type(executor).__name__}, which has no execute()",
        )
    if not isinstance(getattr(executor, "name", None), str):
        executor.name = factory_name
    return executor  # type: ignore[no-any-return]


def build_registry(settings: Settings) -> NotifierRegistry:
    """The channels this process can deliver through: log always, the others when configured."""
    notifiers: list[Notifier] = [LogNotifier()]
    if settings.telegram_token:
        notifiers.append(TelegramNotifier(settings.telegram_token, settings.telegram_api_url))
    if settings.webhook_secret:
        notifiers.append(
            WebhookNotifier(settings.webhook_secret, allow_private=settings.webhook_allow_private)
        )
    return NotifierRegistry(notifiers)
