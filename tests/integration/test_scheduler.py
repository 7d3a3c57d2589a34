"""Scheduler: window, immediate enqueue, dedup, concurrent schedulers, reconcile after loss."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from paysched.actors import Actor
from paysched.app import App
from paysched.clock import ManualClock, to_ms
from paysched.config import Settings
from paysched.domain import OccurrenceState
from paysched.queue import not_before_ms
from tests.conftest import PrivateRedis
from tests.integration.helpers import all_final, fund, pay, running

S = OccurrenceState


async def test_inside_window_enqueued_at_once_outside_waits_for_tick(settings: Settings) -> None:
    clock = ManualClock(datetime.now(UTC))
    app = await App.open(settings.with_overrides(lookahead=timedelta(minutes=5)), clock=clock)
    try:
        assert app.queue is not None and app.scheduler is not None
        await fund(app, {"alice": 10_000, "bob": 0})
        soon = await pay(app, "alice", "bob", 100, in_s=120)
        later = await pay(app, "alice", "bob", 100, in_s=600)
        (occ,) = await app.db(app.store.reads.occurrences_of, soon)
        assert occ.state == S.QUEUED
        assert await app.queue.job_states([occ.key]) == {occ.key: "delayed"}
        assert await app.db(app.store.reads.occurrences_of, later) == []
        clock.advance(timedelta(minutes=6))
        result = await app.scheduler.tick()
        assert result.created == 1
        (occ2,) = await app.db(app.store.reads.occurrences_of, later)
        assert occ2.state == S.QUEUED
        job = await app.queue._queue.getJob(occ2.key)
        # Delay counts from the injected "now", so it is due at due_at: never before it (see
        # test_queue_policy), and within 2 ms after.
        assert job.timestamp + job.delay == not_before_ms(occ2.due_at)
        assert 0 < not_before_ms(occ2.due_at) - occ2.due_at.timestamp() * 1000 <= 2
    finally:
        await app.close()


async def test_enqueue_twice_is_a_no_op(app: App) -> None:
    assert app.queue is not None
    await fund(app, {"alice": 10_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 100, in_s=60)
    occs = await app.db(app.store.reads.occurrences_of, pid)
    await app.queue.enqueue(occs, app.clock.now())
    await app.queue.enqueue(occs, app.clock.now())
    assert (await app.queue.counts())["delayed"] == 1


async def test_replace_renews_the_jobs_it_is_told_to(app: App) -> None:
    """PaymentQueue.replace, the one "remove the job, enqueue it again" of the resolver, a
    resume, a hand-resolved retry and reconcile: the old job gives way to a new one (a plain
    enqueue dedups against it), except those the caller leaves out of `finished` (reconcile:
    a live job keeps its delay)."""
    assert app.queue is not None
    await fund(app, {"alice": 10_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 100, in_s=60)
    (occ,) = await app.db(app.store.reads.occurrences_of, pid)

    async def added_at() -> int:
        assert app.queue is not None
        job = await app.queue._queue.getJob(occ.key)
        return int(job.timestamp)

    first = await added_at()
    later = app.clock.now() + timedelta(seconds=10)
    await app.queue.enqueue([occ], later)
    assert await added_at() == first  # deduped: why the old job must go first
    await app.queue.replace([occ], later, finished=set())
    assert await added_at() == first  # not finished: left as it is
    await app.queue.replace([occ], later, finished={occ.key})
    assert await added_at() == to_ms(later)
    even_later = later + timedelta(seconds=10)
    await app.queue.replace([occ], even_later)  # every one
    assert await added_at() == to_ms(even_later)
    assert (await app.queue.counts())["delayed"] == 1


async def test_two_schedulers_ticking_together_pay_once(settings: Settings) -> None:
    first = await App.open(settings)
    second = await App.open(settings)
    try:
        await fund(first, {"alice": 100_000, "bob": 0})
        now = first.clock.now()
        ids = []
        for i in range(20):  # stored only; the schedulers' ticks discover them
            p = await first.db(
                first.store.payments.create_payment,
                payer="alice",
                payee="bob",
                amount=100 + i,
                currency="USD",
                due_at=now + timedelta(milliseconds=50 * i),
                cron=None,
                timezone=None,
                memo="",
                now=now,
            )
            ids.append(p.id)
        assert first.scheduler is not None and second.scheduler is not None
        results = await asyncio.gather(first.scheduler.tick(), second.scheduler.tick())
        assert sum(r.created for r in results) == 20
        async with running(first, scheduler=False), running(second, scheduler=False):
            occs = await all_final(first, ids)
        assert len(occs) == 20 and {o.state for o in occs} == {S.SUCCEEDED}
        assert all(o.attempts == 1 for o in occs)
        assert await first.db(first.store.accounts.succeeded_transfer_count) == 20
        assert (await first.db(first.store.accounts.get_account, "bob")).balance == sum(
            100 + i for i in range(20)
        )
        assert (await first.db(first.store.accounts.ledger_report)).balanced
    finally:
        await first.close()
        await second.close()


async def test_crash_between_commit_and_enqueue_is_reconciled(app: App) -> None:
    """A scheduler that died after committing occurrences but before enqueueing them."""
    assert app.queue is not None and app.scheduler is not None
    await fund(app, {"alice": 10_000, "bob": 0})
    now = app.clock.now()
    p = await app.db(
        app.store.payments.create_payment,
        payer="alice",
        payee="bob",
        amount=100,
        currency="USD",
        due_at=now,
        cron=None,
        timezone=None,
        memo="",
        now=now,
    )
    (occ,) = await app.db(app.store.payments.materialize_due, now, now + timedelta(minutes=1))
    assert await app.queue.existing([occ.key]) == set()
    result = await app.scheduler.tick()
    assert result.reconciled == 1
    assert await app.queue.existing([occ.key]) == {occ.key}
    async with running(app, scheduler=False):
        (done,) = await all_final(app, [p.id])
    assert done.state == S.SUCCEEDED


async def test_redis_flush_loses_nothing(settings: Settings, private_redis: PrivateRedis) -> None:
    """Redis flushed (FLUSHALL) while payments wait: reconcile rebuilds the queue from the
    database and every payment runs exactly once."""
    cfg = settings.with_overrides(redis_url=private_redis.url, redis_explicit=True)
    app = await App.open(cfg)
    try:
        assert app.queue is not None and app.scheduler is not None
        await fund(app, {"alice": 100_000, "bob": 0})
        # Due well after the flush: creating these and running the due-now one took over 0.5 s
        # on a loaded machine, and a payment already running at the flush is not "lost".
        ids = [await pay(app, "alice", "bob", 100 + i, in_s=3 + 0.1 * i) for i in range(10)]
        ids.append(await pay(app, "alice", "bob", 999, in_s=0))  # due now
        async with running(app, scheduler=False):
            await all_final(app, ids[-1:])
            client = private_redis.client()
            client.flushall()
            client.close()
            assert (await app.queue.counts())["total"] == 0
            result = await app.scheduler.tick()
            assert result.reconciled == 10
            occs = await all_final(app, ids)
        assert {o.state for o in occs} == {S.SUCCEEDED}
        assert await app.db(app.store.accounts.succeeded_transfer_count) == 11
        assert (await app.db(app.store.accounts.ledger_report)).balanced
    finally:
        await app.close()


async def test_recurring_payment_runs_each_occurrence(settings: Settings) -> None:
    clock = ManualClock(datetime(2026, 11, 28, 8, 0, tzinfo=UTC))
    app = await App.open(settings.with_overrides(lookahead=timedelta(hours=1)), clock=clock)
    try:
        assert app.scheduler is not None
        await fund(app, {"alice": 10_000, "bob": 0})
        payment = await app.create_payment(
            actor=Actor.python(),
            payer="alice",
            payee="bob",
            amount=100,
            currency="USD",
            due_at=None,
            cron="*/15 * * * *",
            timezone="Europe/Berlin",
            memo="",
        )
        created = await app.db(app.store.reads.occurrences_of, payment.id)
        assert [o.due_at.minute for o in created] == [15, 30, 45, 0]
        clock.advance(timedelta(minutes=30))
        await app.scheduler.tick()
        assert len(await app.db(app.store.reads.occurrences_of, payment.id)) == 6
    finally:
        await app.close()
