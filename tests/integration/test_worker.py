"""The worker pool end to end on real Redis and SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from paysched.actors import Actor
from paysched.app import App
from paysched.config import Settings
from paysched.db.store import Claim
from paysched.domain import OccurrenceState
from paysched.errors import RetryableError
from paysched.events import Event, EventKind
from paysched.executors.base import ExecutionResult, PaymentOrder
from paysched.executors.flaky import FlakyExecutor, memo_failures
from paysched.executors.ledger import LedgerExecutor
from tests.conftest import PrivateRedis, wait_for
from tests.integration.helpers import all_final, fund, pay, running

S = OccurrenceState


def flaky_factory(app: App) -> FlakyExecutor:
    return FlakyExecutor(LedgerExecutor(app.store, app.clock, app.pool), memo_failures)


async def test_payments_run_once_and_balance(app: App) -> None:
    await fund(app, {"alice": 100_000, "bob": 0})
    ids = [await pay(app, "alice", "bob", 1_000 + i, in_s=0.2 * i) for i in range(10)]
    events: list[Event] = []
    app.bus.subscribe(events.append)
    async with running(app):
        occs = await all_final(app, ids)
    assert {o.state for o in occs} == {S.SUCCEEDED}
    assert all(o.attempts == 1 for o in occs)
    bob = await app.db(app.store.accounts.get_account, "bob")
    assert bob.balance == sum(1_000 + i for i in range(10))
    assert (await app.db(app.store.accounts.ledger_report)).balanced
    # Nothing started before it was due.
    assert all(o.started_at is not None and o.started_at >= o.due_at for o in occs)
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.COMPLETED) == 10
    assert EventKind.PROGRESS in kinds
    stats = await app.stats()
    assert stats["occurrences"]["succeeded"] == 10
    assert stats["queue"]["completed"] == 10
    assert stats["queue"]["total"] == sum(v for k, v in stats["queue"].items() if k != "total")


async def test_retries_follow_backoff_then_succeed(settings: Settings) -> None:
    app = await App.open(settings, executor_factory=flaky_factory, rng=random.Random(3))
    try:
        await fund(app, {"alice": 10_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 500, memo="flaky:2")
        async with running(app):
            (occ,) = await all_final(app, [pid])
        assert occ.state == S.SUCCEEDED and occ.attempts == 3
        history = await app.db(app.store.reads.transitions_of, [occ.id])
        starts = [t.at for t in history if t.to_state == S.EXECUTING]
        retries = [t.at for t in history if t.to_state == S.RETRYING]
        assert len(starts) == 3 and len(retries) == 2
        # Gap from each failure to the next start: the backoff (200 ms * 2**(n-1), +-20 %)
        # plus queue latency, never less than the lower jitter bound.
        for n, (failed_at, next_start) in enumerate(zip(retries, starts[1:], strict=True), 1):
            gap_ms = (next_start - failed_at).total_seconds() * 1000
            low, high = app.backoff.bounds_ms(n)
            assert low - 5 <= gap_ms <= high + 1500, (n, gap_ms, low, high)
        assert (await app.db(app.store.accounts.get_account, "bob")).balance == 500
    finally:
        await app.close()


async def test_retries_exhausted_fail_with_reason(settings: Settings) -> None:
    app = await App.open(settings, executor_factory=flaky_factory)
    try:
        await fund(app, {"alice": 10_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 500, memo="flaky:5")
        async with running(app):
            (occ,) = await all_final(app, [pid])
        assert occ.state == S.FAILED and occ.attempts == 3
        assert occ.reason is not None and "after 3 attempts" in occ.reason
        assert (await app.db(app.store.accounts.get_account, "alice")).balance == 10_000
    finally:
        await app.close()


async def test_permanent_error_is_not_retried(app: App) -> None:
    await fund(app, {"alice": 100, "bob": 0})
    events: list[Event] = []
    app.bus.subscribe(events.append)
    pid = await pay(app, "alice", "bob", 5_000)
    async with running(app):
        (occ,) = await all_final(app, [pid])
    assert occ.state == S.FAILED and occ.attempts == 1
    assert occ.reason == "insufficient funds in 'alice'"
    assert [e.kind for e in events if e.kind is not EventKind.PROGRESS] == [EventKind.FAILED]
    assert app.queue is not None
    assert (await app.queue.counts())["failed"] == 1


async def test_cancelled_while_queued_never_executes(app: App) -> None:
    await fund(app, {"alice": 10_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 700, in_s=1.5)
    keep = await pay(app, "alice", "bob", 300, in_s=1.5)
    assert app.queue is not None
    assert (await app.queue.counts())["delayed"] == 2
    cancelled = (await app.cancel_payment(pid, actor=Actor.python())).cancelled
    assert len(cancelled) == 1
    assert await app.queue.existing([cancelled[0].key]) == set()  # job removed from Redis
    async with running(app):
        await all_final(app, [keep])
    (occ,) = await app.db(app.store.reads.occurrences_of, pid)
    assert occ.state == S.CANCELLED and occ.attempts == 0
    assert (await app.db(app.store.accounts.get_account, "bob")).balance == 300


async def test_backlog_runs_in_due_order(settings: Settings) -> None:
    """After downtime, overdue payments start earliest-due first (priority from due time)."""
    app = await App.open(settings.with_overrides(concurrency=1))
    try:
        await fund(app, {"alice": 100_000, "bob": 0})
        now = app.clock.now()
        # Created in scrambled order, all overdue by minutes: the queue holds them at once.
        offsets = [7, 2, 9, 4, 1, 8, 3, 6, 5]
        ids = []
        for minutes in offsets:
            payment = await app.create_payment(
                actor=Actor.python(),
                payer="alice",
                payee="bob",
                amount=100 + minutes,
                currency="USD",
                due_at=now - timedelta(minutes=minutes * 3),
                cron=None,
                timezone=None,
                memo="",
            )
            ids.append(payment.id)
        async with running(app, scheduler=False):
            occs = await all_final(app, ids)
        started = sorted(occs, key=lambda o: o.started_at or o.due_at)
        assert [o.due_at for o in started] == sorted(o.due_at for o in occs)
    finally:
        await app.close()


async def test_retryable_executor_error_is_retried(settings: Settings) -> None:
    calls: list[int] = []

    class Boom:
        name = "boom"

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def execute(self, order: PaymentOrder) -> Any:
            calls.append(order.attempt)
            if len(calls) == 1:
                raise RetryableError("HTTP 503 from provider")
            return await self.inner.execute(order)

    app = await App.open(
        settings, executor_factory=lambda a: Boom(LedgerExecutor(a.store, a.clock, a.pool))
    )
    try:
        await fund(app, {"alice": 1_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 100)
        async with running(app):
            (occ,) = await all_final(app, [pid])
        assert occ.state == S.SUCCEEDED and calls == [1, 2]
    finally:
        await app.close()


async def test_an_executor_of_the_old_contract_still_runs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Executors written before PaymentOrder took `execute(claim, idempotency_key)`: they get
    the claim and the key as before (with a warning), not a TypeError that would have left
    every payment unknown."""
    seen: list[tuple[Claim, str]] = []

    class OldStyle:
        name = "old-style"

        async def execute(self, claim: Any, idempotency_key: str) -> Any:
            seen.append((claim, idempotency_key))
            return ExecutionResult.succeeded(f"bank-{idempotency_key}")

    with caplog.at_level("WARNING", "paysched.executors"):
        # Typed as the contract it predates: App.open's adapter is what is tested.
        old: Any = OldStyle()
        app = await App.open(settings, executor_factory=lambda a: old)
    try:
        assert "deprecated" in caplog.text and "old-style" in caplog.text
        await fund(app, {"alice": 1_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 100)
        async with running(app):
            (occ,) = await all_final(app, [pid])
        assert occ.state == S.SUCCEEDED and occ.reference == f"bank-{occ.key}"
        ((claim, key),) = seen
        assert isinstance(claim, Claim) and claim.occurrence.id == occ.id and key == occ.key
    finally:
        await app.close()


async def test_unexpected_executor_error_is_never_guessed(settings: Settings) -> None:
    """An executor that raises something it did not declare may or may not have moved money:
    not retried with the same or a new key, not failed; a person looks (needs_review)."""

    class Buggy:
        name = "buggy"

        async def execute(self, order: PaymentOrder) -> Any:
            raise ValueError("index out of range in the provider client")

    app = await App.open(settings, executor_factory=lambda a: Buggy())
    try:
        await fund(app, {"alice": 1_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 100)

        async def parked() -> bool:
            (occ,) = await app.db(app.store.reads.occurrences_of, pid)
            return occ.state == S.NEEDS_REVIEW

        async with running(app):
            await wait_for(parked, 20, "the occurrence to need review")
        (occ,) = await app.db(app.store.reads.occurrences_of, pid)
        assert occ.attempts == 1
        assert "executor error: ValueError: index out of range" in (occ.reason or "")
        assert (await app.db(app.store.accounts.get_account, "alice")).balance == 1_000
    finally:
        await app.close()


async def test_a_second_needs_review_is_announced_too(settings: Settings) -> None:
    """Issue 19, finding 3: the needs_review notification's dedup key named only the
    occurrence, so after a person's retry that ended in needs_review again nobody was told."""

    class Unsure:
        name = "unsure"

        async def execute(self, order: PaymentOrder) -> Any:
            return ExecutionResult.unknown("the bank's answer was cut off")

    app = await App.open(settings, executor_factory=lambda a: Unsure())
    try:
        await fund(app, {"alice": 1_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 100)
        (occ,) = await app.db(app.store.reads.occurrences_of, pid)
        assert app.outbox is not None
        outbox = app.outbox

        async def announced(count: int) -> bool:
            current = await app.db(app.store.reads.get_occurrence, occ.id)
            events = [n.event for n in await app.db(outbox.list, None, pid, 100)]
            return current.state == S.NEEDS_REVIEW and events.count("needs_review") == count

        async with running(app):
            await wait_for(lambda: announced(1), 20, "the first needs_review to be announced")
            await app.resolve_occurrence(
                occ.key, "retry", "the bank says it never arrived", actor=Actor.python()
            )
            await wait_for(lambda: announced(2), 20, "the second needs_review to be announced")
        review = [n for n in await app.db(outbox.list, None, pid, 100) if n.event == "needs_review"]
        assert len({n.dedup_key for n in review}) == 2
    finally:
        await app.close()


async def test_a_retrying_occurrence_of_a_paused_payment_runs_at_resume(app: App) -> None:
    """Issue 19, finding 4: the retry of a paused payment's occurrence came back while it was
    paused and ended refused; resume re-enqueued only scheduled and queued occurrences, so it
    waited for the next reconcile (up to a minute). Now it runs at resume."""
    await fund(app, {"alice": 1_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 100)  # due now: queued at once
    (occ,) = await app.db(app.store.reads.occurrences_of, pid)
    assert occ.state == S.QUEUED and app.queue is not None
    queue = app.queue
    # Its first attempt moved nothing and left it retrying; its job is back in the queue.
    first = await app.db(app.store.execution.claim, occ.id, app.clock.now(), occ.key)
    assert isinstance(first, Claim)
    assert await app.db(app.store.execution.finish, first, S.RETRYING, app.clock.now(), "bank busy")
    await app.pause_payment(pid, actor=Actor.python())

    async def refused() -> bool:
        return await queue.job_states([occ.key]) == {occ.key: "completed"}

    async def succeeded() -> bool:
        return (await app.db(app.store.reads.get_occurrence, occ.id)).state == S.SUCCEEDED

    async with running(app, scheduler=False):  # no reconcile: only resume can release it
        await wait_for(refused, 20, "the paused payment's retry to be refused")
        assert (await app.db(app.store.reads.get_occurrence, occ.id)).state == S.RETRYING
        resumed = await app.resume_payment(pid, actor=Actor.python())
        assert [o.id for o in resumed.occurrences] == [occ.id]
        await wait_for(succeeded, 20, "the retry to run after resume")
    assert (await app.db(app.store.accounts.get_account, "bob")).balance == 100


async def test_corrupt_job_fails_without_crashing_the_worker(app: App) -> None:
    await fund(app, {"alice": 1_000, "bob": 0})
    assert app.queue is not None
    await app.queue._queue.add("payment", {"occurrence_id": "DROP TABLE"}, {"jobId": "bad-1"})
    pid = await pay(app, "alice", "bob", 100)
    async with running(app):
        await all_final(app, [pid])

        async def bad_failed() -> bool:
            assert app.queue is not None
            return await app.queue.job_states(["bad-1"]) == {"bad-1": "failed"}

        await wait_for(bad_failed, 10, "the corrupt job to be failed")
    job = await app.queue._queue.getJob("bad-1")
    assert "occurrence_id: expected a positive integer" in job.failedReason


class Held:
    """The ledger executor, held inside the payment until the test releases it."""

    name = "held"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def execute(self, order: PaymentOrder) -> Any:
        self.entered.set()
        await self.release.wait()
        return await self.inner.execute(order)


async def test_graceful_stop_lets_active_payment_finish(settings: Settings) -> None:
    held: list[Held] = []

    def factory(a: App) -> Any:
        held.append(Held(LedgerExecutor(a.store, a.clock, a.pool)))
        return held[0]

    app = await App.open(
        settings.with_overrides(shutdown_grace=timedelta(seconds=30)), executor_factory=factory
    )
    try:
        await fund(app, {"alice": 1_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 100)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop, scheduler=False))
        await asyncio.wait_for(held[0].entered.wait(), 10)
        stop.set()  # what SIGTERM does
        # A stop that did not wait for the active payment would be over well within this.
        finished, _ = await asyncio.wait({task}, timeout=1.0)
        assert not finished, "stopped without waiting for the active payment"
        held[0].release.set()
        await asyncio.wait_for(task, 10)
        (occ,) = await app.db(app.store.reads.occurrences_of, pid)
        assert occ.state == S.SUCCEEDED
    finally:
        await app.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_quick_payment_says_succeeded_in_the_queue_by_its_completion(app: App) -> None:
    """A payment whose steps were all quick writes no progress to Redis (not even 100 %: one
    Lua script per payment): the completed job's return value says it succeeded, and its
    progress never showed a step it has left."""
    await fund(app, {"alice": 1_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 100)
    events: list[Event] = []
    app.bus.subscribe(events.append)
    async with running(app):
        (occ,) = await all_final(app, [pid])
    assert app.queue is not None
    job = await app.queue._queue.getJob(occ.key)
    assert job is not None
    assert await app.queue._queue.getJobState(occ.key) == "completed"
    assert job.returnvalue == {"succeeded": True, "occurrence": occ.key}
    assert job.progress in (0, None)
    # Subscribers still hear every step, the last one "succeeded".
    steps = [e.detail["step"] for e in events if e.kind == EventKind.PROGRESS]
    assert steps[-1] == "succeeded"


class GatedExecutor:
    """The ledger executor behind a gate that the test opens."""

    name = "gated"

    def __init__(self, inner: LedgerExecutor) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.inside = 0  # payments waiting at the gate right now

    async def execute(self, order: PaymentOrder) -> Any:
        self.inside += 1
        try:
            await self.gate.wait()
        finally:
            self.inside -= 1
        return await self.inner.execute(order)


async def test_a_slow_step_shows_in_the_queue_while_it_runs(settings: Settings) -> None:
    """A quick ledger payment writes only its final progress to Redis; an executor that takes
    longer shows "executing" in the queue while it runs, then "succeeded"."""
    executors: list[GatedExecutor] = []

    def factory(app: App) -> GatedExecutor:
        executors.append(GatedExecutor(LedgerExecutor(app.store, app.clock, app.pool)))
        return executors[-1]

    app = await App.open(settings, executor_factory=factory)
    try:
        await fund(app, {"alice": 1_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 100)
        assert app.queue is not None
        queue = app.queue
        async with running(app):
            (occ,) = await app.db(app.store.reads.all_occurrences, [pid])

            async def executing() -> bool:
                progress = await queue.get_progress(occ.key)
                return isinstance(progress, dict) and progress.get("percent") == 50

            await wait_for(executing, what="'executing' progress in the queue")
            assert (await queue.get_progress(occ.key))["step"] == "executing via gated"
            executors[0].gate.set()
            (occ,) = await all_final(app, [pid])
        assert occ.state == S.SUCCEEDED
        assert await queue.get_progress(occ.key) == {"percent": 100, "step": "succeeded"}
    finally:
        await app.close()


async def test_concurrency_runs_that_many_payments_at_once(settings: Settings) -> None:
    """The seed's pool: with concurrency 3, three payments execute together and a fourth waits
    for a free slot (the worker fetches jobs one at a time, but runs them in parallel)."""
    executors: list[GatedExecutor] = []

    def factory(app: App) -> GatedExecutor:
        executors.append(GatedExecutor(LedgerExecutor(app.store, app.clock, app.pool)))
        return executors[-1]

    app = await App.open(settings.with_overrides(concurrency=3), executor_factory=factory)
    try:
        await fund(app, {"alice": 1_000, "bob": 0})
        ids = [await pay(app, "alice", "bob", 100) for _ in range(4)]
        async with running(app):
            gated = executors[0]

            async def three_inside() -> bool:
                return gated.inside == 3

            await wait_for(three_inside, what="three payments executing together")
            counts = await app.db(app.store.reads.occurrence_counts)
            assert counts["executing"] == 3  # the fourth was not claimed: no free slot
            gated.gate.set()
            occs = await all_final(app, ids)
        assert {o.state for o in occs} == {S.SUCCEEDED}
        assert (await app.db(app.store.accounts.get_account, "bob")).balance == 400
    finally:
        await app.close()


async def test_stopped_right_after_starting_leaves_no_redis_connection(
    settings: Settings, private_redis: PrivateRedis
) -> None:
    """A worker closed before its run task first ran used to reopen its connections after
    close() (CLIENT SETNAME in run()) and leave them open until the GC: on a private Redis,
    every connection of the app is gone once it has closed."""
    app = await App.open(settings.with_overrides(redis_url=private_redis.url, redis_explicit=True))
    stop = asyncio.Event()
    try:
        run = asyncio.create_task(app.run(stop))
        await asyncio.sleep(0)  # run() starts the worker pool, and is stopped at once
        stop.set()
        await asyncio.wait_for(run, 30)
    finally:
        await app.close()
    with private_redis.client() as probe:
        me = str(probe.client_id())

        async def only_the_probe_left() -> bool:
            return [c["id"] for c in probe.client_list()] == [me]

        await wait_for(only_the_probe_left, 5, "every connection of the app to be closed")
