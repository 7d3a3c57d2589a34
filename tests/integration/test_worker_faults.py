"""The worker under infrastructure errors and a queue shared by two deployments."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from paysched.app import App, default_executor
from paysched.config import Settings
from paysched.db.store import Claim, Store
from paysched.domain import OccurrenceState
from paysched.errors import DatabaseUnavailable, PermanentError
from paysched.events import Event, EventKind
from paysched.executors.base import Executor
from tests.conftest import PG_ADMIN, wait_for
from tests.integration.helpers import all_final, fund, pay, running

S = OccurrenceState


class TerminatedSettles:
    """Has PostgreSQL itself terminate the connection of each of the first `failures` settle
    transactions, just before its first statement (pg_terminate_backend, as an operator or a
    failover does): the ledger then meets the driver's real error for a killed backend, not
    an imitation of it."""

    def __init__(self, store: Store, failures: int) -> None:
        self.failures = failures
        self.errors: list[str] = []  # the driver's own messages, as the settles met them
        self._settling = threading.local()
        self._lock = threading.Lock()
        settle_many = store.execution.settle_many

        def settle_marked(claims: Sequence[Claim], now: datetime) -> list[bool | PermanentError]:
            self._settling.first_statement = True
            try:
                return settle_many(claims, now)
            except DatabaseUnavailable as exc:  # the driver's own error is its cause
                self.errors.append(str(exc.__cause__))
                raise
            finally:
                self._settling.first_statement = False

        store.execution.settle_many = settle_marked  # type: ignore[method-assign]
        event.listen(store.engine, "before_cursor_execute", self._before_statement)

    def _before_statement(self, conn: Any, cursor: Any, *args: Any) -> None:
        if not getattr(self._settling, "first_statement", False):
            return
        self._settling.first_statement = False
        with self._lock:
            if self.failures == 0:
                return
            self.failures -= 1
        pid = cursor.connection.info.backend_pid
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            # With a timeout it returns once the backend is gone, so the statement surely
            # meets a dead connection (never a race with the signal).
            row = admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
        assert row == (True,), row


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_infrastructure_errors_never_consume_attempts(settings: Settings) -> None:
    """Finding 2: five database errors in a row, with 3 attempts allowed, used to end the
    payment 'failed' and tell the person no money moved. Now it succeeds on its first
    counted attempt, and nobody is told of a retry that was not the payment's. The errors
    are PostgreSQL's own: the settle's connection terminated by the server."""
    killers: list[TerminatedSettles] = []

    def factory(app: App) -> Executor:
        killers.append(TerminatedSettles(app.store, failures=5))
        return default_executor(app)

    app = await App.open(settings.with_overrides(attempts=3), executor_factory=factory)
    try:
        await fund(app, {"alice": 5_000, "bob": 0})
        pid = await pay(app, "alice", "bob", 1_250)
        async with running(app):
            (occ,) = await all_final(app, [pid], timeout=60)
        assert occ.state == S.SUCCEEDED and occ.attempts == 1
        assert killers[0].failures == 0
        assert len(killers[0].errors) == 5
        assert all("terminat" in e or "closed" in e for e in killers[0].errors), killers[0].errors
        history = await app.db(app.store.reads.transitions_of, [occ.id])
        releases = [h for h in history if h.to_state == S.RETRYING]
        assert len(releases) == 5
        assert all("not counted as an attempt" in (h.reason or "") for h in releases)
        # Said once: the ledger's reason was prefixed again ("database error: database error:").
        assert all((h.reason or "").startswith("database unavailable: ") for h in releases)
        assert not any((h.reason or "").count("database ") > 1 for h in releases), releases
        assert app.outbox is not None
        sent = await app.db(app.outbox.list, None, pid, 100)
        assert [n.event for n in sent] == ["succeeded"]
        assert (await app.db(app.store.accounts.get_account, "bob")).balance == 1_250
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
        lambda e: (
            refused.append(e) if e.kind is EventKind.ERROR and e.detail.get("foreign_job") else None
        )
    )
    try:
        assert owner.store.deployment_id() != other.store.deployment_id()
        await fund(owner, {"alice": 5_000, "bob": 0})
        await fund(other, {"alice": 5_000, "bob": 0})  # same names, ids, even keys may match
        pid = await pay(owner, "alice", "bob", 700)

        async def was_refused() -> bool:
            return bool(refused)

        async with running(other, scheduler=False):
            await wait_for(was_refused, 30, "the other deployment to refuse the job")
        (occ,) = await owner.db(owner.store.reads.occurrences_of, pid)
        assert occ.state == S.QUEUED  # untouched: never skipped, never completed
        assert await other.db(other.store.reads.all_occurrences) == []
        assert owner.queue is not None
        assert (await owner.queue.job_states([occ.key]))[occ.key] != "completed"
        others = await owner.queue.announce(owner.clock.now())
        assert others == [other.store.deployment_id()]  # `paysched check` reports this
        async with running(owner):
            (done,) = await all_final(owner, [pid], timeout=60)
        assert done.state == S.SUCCEEDED
        assert (await owner.db(owner.store.accounts.get_account, "bob")).balance == 700
    finally:
        await other.close()
        await owner.close()
