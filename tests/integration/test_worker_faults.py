"""The worker under infrastructure errors and a queue shared by two deployments."""

from __future__ import annotations

import uuid
from pathlib import Path

from paysched.app import App, default_executor
from paysched.config import Settings
from paysched.db.store import Claim
from paysched.domain import OccurrenceState
from paysched.errors import InfrastructureError
from paysched.events import Event, EventKind
from paysched.executors.base import ExecutionResult, Executor
from tests.conftest import wait_for
from tests.integration.helpers import all_final, fund, pay, running

S = OccurrenceState


class BrokenDatabaseFirst:
    """The ledger, after paysched's own database failed under the first `failures` calls."""

    def __init__(self, inner: Executor, failures: int) -> None:
        self.name = "broken-db-first"
        self._inner = inner
        self.failures = failures

    async def execute(self, claim: Claim, idempotency_key: str) -> ExecutionResult:
        if self.failures > 0:
            self.failures -= 1
            raise InfrastructureError("database error: server closed the connection")
        return await self._inner.execute(claim, idempotency_key)


async def test_infrastructure_errors_never_consume_attempts(settings: Settings) -> None:
    """Finding 2: five database errors in a row, with 3 attempts allowed, used to end the
    payment 'failed' and tell the person no money moved. Now it succeeds on its first
    counted attempt, and nobody is told of a retry that was not the payment's."""
    executors: list[BrokenDatabaseFirst] = []

    def factory(app: App) -> Executor:
        executors.append(BrokenDatabaseFirst(default_executor(app), failures=5))
        return executors[0]

    app = await App.open(settings.with_overrides(attempts=3), executor_factory=factory)
    try:
        await fund(app, {"alice": 5_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 1_250)
        async with running(app):
            (occ,) = await all_final(app, [pid], timeout=60)
        assert occ.state == S.SUCCEEDED and occ.attempts == 1
        assert executors[0].failures == 0
        history = await app.db(app.store.transitions_of, [occ.id])
        releases = [h for h in history if h.to_state == S.RETRYING]
        assert len(releases) == 5
        assert all("not counted as an attempt" in (h.reason or "") for h in releases)
        assert app.outbox is not None
        sent = await app.db(app.outbox.list, None, pid, 100)
        assert [n.event for n in sent] == ["succeeded"]
        assert (await app.db(app.store.get_account, "bob")).balance == 1_250
    finally:
        await app.close()


async def test_a_queue_shared_by_two_deployments_never_runs_the_others_jobs(
    settings: Settings, tmp_path: Path
) -> None:
    """Finding 5: two deployments (two databases) on one Redis queue. A worker of the other
    deployment used to complete the job as 'skipped', and the payment starved. Now it refuses
    the job loudly, never completes it, and the owner runs it."""
    other_db = f"sqlite:///{tmp_path / f'other-{uuid.uuid4().hex[:6]}.db'}"
    owner = await App.open(settings)
    other = await App.open(settings.with_overrides(database_url=other_db))
    refused: list[Event] = []
    other.bus.subscribe(
        lambda e: refused.append(e) if e.kind is EventKind.ERROR and e.detail.get("foreign_job")
        else None
    )  # fmt: skip
    try:
        assert owner.store.deployment_id() != other.store.deployment_id()
        await fund(owner, {"alice": 5_000, "bob": 0})
        await fund(other, {"alice": 5_000, "bob": 0})  # same names, ids, even keys may match
        pid = await pay(owner, "alice", "bob", 700)

        async def was_refused() -> bool:
            return bool(refused)

        async with running(other, scheduler=False):
            await wait_for(was_refused, 30, "the other deployment to refuse the job")
        (occ,) = await owner.db(owner.store.occurrences_of, pid)
        assert occ.state == S.QUEUED  # untouched: never skipped, never completed
        assert await other.db(other.store.all_occurrences) == []
        assert owner.queue is not None
        assert (await owner.queue.job_states([occ.key]))[occ.key] != "completed"
        others = await owner.queue.announce(owner.clock.now())
        assert others == [other.store.deployment_id()]  # `paysched check` reports this
        async with running(owner):
            (done,) = await all_final(owner, [pid], timeout=60)
        assert done.state == S.SUCCEEDED
        assert (await owner.db(owner.store.get_account, "bob")).balance == 700
    finally:
        await other.close()
        await owner.close()
