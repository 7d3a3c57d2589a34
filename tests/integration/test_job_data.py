"""What a BullMQ job shows to a person reading the queue (Bull Board, redis-cli): a readable
summary in its data, and a business failure's reason as its failedReason. Real Redis."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from paysched.actors import Actor
from paysched.app import App
from paysched.config import Settings
from paysched.domain import OccurrenceState
from paysched.errors import RetryableError
from paysched.executors.base import ExecutionResult, PaymentOrder
from paysched.executors.ledger import LedgerExecutor
from tests.integration.helpers import all_final, fund, pay, running

MEMO = "rent for Jane Doe, IBAN DE89370400440532013000"
HOOK = "webhook:https://hooks.example/t/s3cr3t-token"


async def _job(app: App, key: str) -> Any:
    assert app.queue is not None
    job = await app.queue._queue.getJob(key)
    assert job is not None, f"no job {key} in Redis"
    return job


async def test_job_data_has_a_summary_and_no_memo_or_targets(app: App) -> None:
    await fund(app, {"alice": 0, "bob": 0}, currency="EUR")
    payment = await app.create_payment(
        actor=Actor.python(),
        payer="alice",
        payee="bob",
        amount=1234,
        currency="EUR",
        due_at=app.clock.now() + timedelta(seconds=50),
        cron=None,
        timezone=None,
        memo=MEMO,
        notify=[HOOK, "telegram:987654"],
    )
    (occ,) = await app.db(app.store.reads.occurrences_of, payment.id)
    job = await _job(app, occ.key)
    assert job.data["summary"] == f"payment #{payment.id}: 12.34 EUR alice → bob"
    assert job.data["occurrence_id"] == occ.id and job.data["payment_id"] == payment.id
    raw = json.dumps(job.data, ensure_ascii=False)
    for secret in ("Jane Doe", "DE89", "s3cr3t", "987654", "hooks.example"):
        assert secret not in raw


async def test_jobs_enqueued_without_their_payments_read_them_once_per_batch(app: App) -> None:
    """Reconcile re-creates lost jobs from occurrences alone: the summaries of a whole batch
    come from one read of the payments, not one per job."""
    await fund(app, {"alice": 0, "bob": 0, "carol": 0})
    ids = [await pay(app, "alice", "bob", 100 + i, in_s=50) for i in range(3)]
    ids.append(await pay(app, "bob", "carol", 5, in_s=50))
    occs = await app.db(app.store.reads.all_occurrences, ids)
    assert app.queue is not None and app.scheduler is not None
    for occ in occs:  # Redis lost them
        assert await app.queue.remove(occ.key)
    reads: list[Sequence[int]] = []
    read = app.queue.read_summaries
    assert read is not None

    async def counted(payment_ids: Sequence[int]) -> Mapping[int, str]:
        reads.append(payment_ids)
        return await read(payment_ids)

    app.queue.read_summaries = counted
    assert await app.scheduler.reconcile(app.clock.now()) == len(occs)
    assert reads == [sorted(ids)]
    summaries = {(await _job(app, o.key)).data["summary"] for o in occs}
    assert summaries == {
        f"payment #{ids[0]}: 1.00 USD alice → bob",
        f"payment #{ids[1]}: 1.01 USD alice → bob",
        f"payment #{ids[2]}: 1.02 USD alice → bob",
        f"payment #{ids[3]}: 0.05 USD bob → carol",
    }


async def test_a_failed_read_leaves_the_summary_out_not_the_job(app: App) -> None:
    await fund(app, {"alice": 0, "bob": 0})
    pid = await pay(app, "alice", "bob", 100, in_s=50)
    (occ,) = await app.db(app.store.reads.occurrences_of, pid)
    assert app.queue is not None and app.scheduler is not None
    assert await app.queue.remove(occ.key)

    async def broken(payment_ids: Sequence[int]) -> Mapping[int, str]:
        raise RuntimeError("database away")

    app.queue.read_summaries = broken
    assert await app.scheduler.reconcile(app.clock.now()) == 1
    job = await _job(app, occ.key)
    assert "summary" not in job.data and job.data["occurrence_id"] == occ.id


async def test_a_declined_payment_fails_its_job_with_the_reason_not_a_traceback(
    app: App,
) -> None:
    await fund(app, {"alice": 100, "bob": 0})
    pid = await pay(app, "alice", "bob", 5_000)
    async with running(app):
        (occ,) = await all_final(app, [pid])
    assert occ.state == OccurrenceState.FAILED
    job = await _job(app, occ.key)
    assert await job.isFailed()
    assert job.failedReason == "insufficient funds in 'alice'"
    assert job.stacktrace == []


async def test_a_business_retry_keeps_its_reason_not_a_traceback(settings: Settings) -> None:
    """The provider's 503 on the first attempt: the job is retried with that reason and no
    stack trace of paysched's own code (as a final business failure), then succeeds."""

    class FirstAttemptBusy:
        name = "first-busy"

        def __init__(self, inner: LedgerExecutor) -> None:
            self.inner = inner

        async def execute(self, order: PaymentOrder) -> ExecutionResult:
            if order.attempt == 1:
                raise RetryableError("HTTP 503 from provider")
            return await self.inner.execute(order)

    app = await App.open(
        settings,
        executor_factory=lambda a: FirstAttemptBusy(LedgerExecutor(a.store, a.clock, a.pool)),
    )
    try:
        await fund(app, {"alice": 1_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 100)
        async with running(app):
            (occ,) = await all_final(app, [pid])
        assert occ.state == OccurrenceState.SUCCEEDED and occ.attempts == 2
        job = await _job(app, occ.key)
        assert await job.isCompleted()
        assert job.attemptsMade == 2 and job.failedReason == "HTTP 503 from provider"
        assert job.stacktrace == []
    finally:
        await app.close()
