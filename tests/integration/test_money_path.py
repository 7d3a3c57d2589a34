"""Regression tests for the money path's races, on SQLite and PostgreSQL.

Each reproduces a finding deterministically (a paused transaction, a stale read forced on the
store, a row lock held by another connection) and fails without its fix.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text

from paysched.clock import SystemClock
from paysched.db import tables as t
from paysched.db.store import Claim, Finish, LostRace, NoClaim, Store, transitions
from paysched.domain import OccurrenceState
from paysched.errors import Conflict, ConstraintViolation, InfrastructureError
from paysched.executors.base import Outcome
from paysched.executors.claims import order_of
from paysched.executors.ledger import LedgerExecutor
from tests.conftest import wait_for_sync

S = OccurrenceState
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def accounts(store: Store, *names: str, balance: int = 10_000) -> None:
    for name in names:
        store.accounts.create_account(name, "USD", T0)
        store.accounts.deposit(name, balance, T0)


def payment(
    store: Store,
    payer: str = "alice",
    payee: str = "bob",
    cron: str | None = None,
    amount: int = 1_000,
) -> int:
    return store.payments.create_payment(
        payer=payer,
        payee=payee,
        amount=amount,
        currency="USD",
        due_at=None if cron else T0,
        cron=cron,
        timezone=None,
        memo="",
        now=T0 - timedelta(hours=1),
    ).id


def waiting_on_a_lock(store: Store) -> bool:
    """Is a connection of this database waiting for another transaction's lock?"""
    if store.dialect == "sqlite":
        # SQLite's writers wait in BEGIN IMMEDIATE's busy handler, invisible from outside;
        # the file's write lock is held by the paused materialize, so a cancel that has
        # started is necessarily waiting. Ask for the lock without waiting to see it held.
        import sqlite3

        probe = sqlite3.connect(store.engine.url.database or "", timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    with store.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def claimed(result: Claim | NoClaim) -> Claim:
    assert isinstance(result, Claim), result
    return result


def test_a_cancel_racing_materialize_cancels_what_it_created(store: Store) -> None:
    """Finding 1: materialize paused between its occurrence INSERT and its payment UPDATE, a
    cancel from another connection meanwhile. The cancel must wait for the materialize and
    then cancel the occurrence it created; before the fix it returned at once with nothing
    cancelled, and the occurrence went on to execute."""
    accounts(store, "alice", "bob")
    pid = payment(store)
    inserted, resume = threading.Event(), threading.Event()
    materializer: list[int] = []

    def pause_after_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            threading.get_ident() in materializer
            and not inserted.is_set()
            and statement.lstrip().upper().startswith("INSERT INTO OCCURRENCES")
        ):
            inserted.set()
            assert resume.wait(timeout=30)

    event.listen(store.engine, "after_cursor_execute", pause_after_insert)

    def materialize() -> list[Any]:
        materializer.append(threading.get_ident())
        return store.payments.materialize_due(T0, T0)

    with ThreadPoolExecutor(max_workers=2) as pool:
        created = pool.submit(materialize)
        assert inserted.wait(timeout=30)
        cancel = pool.submit(store.control.cancel_payment, pid, T0, "cancelled by user")
        # Resume only once the cancel has run as far as it can: finished (the bug: it saw
        # nothing to cancel), or waiting for the materialize's transaction.
        wait_for_sync(lambda: cancel.done() or waiting_on_a_lock(store), 30, "the cancel")
        resume.set()
        (occ,) = created.result(timeout=30)
        result = cancel.result(timeout=30)
    assert [o.id for o in result.cancelled] == [occ.id]
    assert store.reads.get_occurrence(occ.id).state == S.CANCELLED
    assert store.execution.claim(occ.id, T0) == NoClaim("final", S.CANCELLED)


def test_a_claim_never_starts_an_occurrence_of_a_cancelled_payment(store: Store) -> None:
    """The claim reads the payment under a lock: an occurrence that slipped past a cancel
    (however it got there) is cancelled at its claim, never executed."""
    accounts(store, "alice", "bob")
    pid = payment(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    with store.engine.begin() as conn:  # the cancel committed, the occurrence not cancelled
        conn.execute(t.payments.update().where(t.payments.c.id == pid).values(state="cancelled"))
    assert store.execution.claim(occ.id, T0) == NoClaim("cancelled", S.CANCELLED)
    after = store.reads.get_occurrence(occ.id)
    assert after.state == S.CANCELLED and after.reason == "payment cancelled"
    assert after.attempts == 0 and store.accounts.get_account("bob").balance == 10_000


def test_cancel_leaves_an_executing_occurrence_to_finish(store: Store) -> None:
    """Finding 4: an occurrence already executing may have paid (a provider): cancel reports
    it and leaves it to finish; it never ends 'cancelled' after its money moved."""
    accounts(store, "alice", "bob")
    recurring = payment(store, cron="0 9 * * *")
    one_time = payment(store)
    occs = store.payments.materialize_due(T0, T0)
    claims = {o.payment_id: claimed(store.execution.claim(o.id, T0)) for o in occs}

    result = store.control.cancel_payment(recurring, T0, "cancelled by user")
    assert result.cancelled == [] and [o.id for o in result.in_flight] == [
        claims[recurring].occurrence.id
    ]
    assert result.payment.state.value == "cancelled"  # no more occurrences will come
    with pytest.raises(Conflict, match="executing"):
        store.control.cancel_payment(one_time, T0, "cancelled by user")

    assert all(store.execution.settle_transfer(c, T0) for c in claims.values())
    for c in claims.values():
        assert store.reads.get_occurrence(c.occurrence.id).state == S.SUCCEEDED
    assert store.accounts.get_account("bob").balance == 12_000
    assert store.accounts.ledger_report().balanced


def test_a_taken_over_retrying_occurrence_is_not_cancelled(store: Store) -> None:
    """Issue 19, finding 1: worker A sent the charge and stalled, worker B took the attempt
    over and could not connect: `retrying`. A's request may have charged, so a cancel must
    not mark it cancelled (A's success would then be fenced out and the charge buried): it is
    in flight, and a one-time payment's cancel answers that the provider is asked first."""
    accounts(store, "alice", "bob")
    recurring = payment(store, cron="0 9 * * *")
    one_time = payment(store)
    occs = store.payments.materialize_due(T0, T0)
    for occ in occs:
        claimed(store.execution.claim(occ.id, T0))  # worker A: the charge is on its way
        takeover = claimed(store.execution.claim(occ.id, T0))  # worker B takes the attempt over
        assert takeover.occurrence.takeovers == 1
        assert store.execution.finish(takeover, S.RETRYING, T0, "provider unreachable")
    with pytest.raises(Conflict, match="asking the provider first"):
        store.control.cancel_payment(one_time, T0, "cancelled by user")
    result = store.control.cancel_payment(recurring, T0, "cancelled by user")
    assert result.cancelled == [] and len(result.in_flight) == 1
    assert {store.reads.get_occurrence(o.id).state for o in occs} == {S.RETRYING}
    # Its retry still runs under the same key (claims of a cancelled payment stop only what
    # a cancel could stop): the provider answers with what the first request did.
    for occ in occs:
        assert isinstance(store.execution.claim(occ.id, T0), Claim)


def test_compare_and_set_holds_without_the_locked_read(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 3: correctness must not rest on the locked read. Feed the store a stale view
    (as if the row lock did not hold): the SQL compare-and-set on state and fence still
    refuses the stale claim, and the whole transaction rolls back."""
    accounts(store, "alice", "bob")
    payment(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    stale = claimed(store.execution.claim(occ.id, T0))
    stale_view = {occ.id: stale.occurrence}
    current = claimed(store.execution.claim(occ.id, T0 + timedelta(seconds=1)))  # a takeover
    monkeypatch.setattr(transitions, "lock", lambda conn, ids: dict(stale_view))
    history_before = len(store.reads.transitions_of([occ.id]))

    with pytest.raises(LostRace):
        store.execution.settle_many([stale], T0)
    with pytest.raises(LostRace):
        store.execution.finish(stale, S.FAILED, T0, "stale worker")

    monkeypatch.undo()
    after = store.reads.get_occurrence(occ.id)
    assert (after.state, after.fence) == (S.EXECUTING, current.fence)
    assert len(store.reads.transitions_of([occ.id])) == history_before
    assert store.accounts.get_account("bob").balance == 10_000  # no money moved
    assert store.execution.settle_transfer(current, T0) is True


def test_claims_refuse_a_job_whose_key_is_not_this_databases(store: Store) -> None:
    """Finding 5 at the store: a job from another deployment names an occurrence id that
    exists here with another key. It is refused and the occurrence is left untouched."""
    accounts(store, "alice", "bob")
    payment(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    assert store.execution.claim(occ.id, T0, key="pay-77-1795856400000") == NoClaim(
        "foreign", S.SCHEDULED
    )
    assert store.reads.get_occurrence(occ.id) == occ


def test_unknown_currencies_and_bad_rows_are_refused_by_the_schema(store: Store) -> None:
    """Finding 6: CHECK constraints stop a state, an amount or a payer == payee that the code
    would never write."""
    accounts(store, "alice", "bob")
    pid = payment(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    for table, column, value, where in (
        (t.occurrences, "state", "paid", t.occurrences.c.id == occ.id),
        (t.occurrences, "attempts", -1, t.occurrences.c.id == occ.id),
        (t.payments, "amount", 0, t.payments.c.id == pid),
        (t.payments, "state", "gone", t.payments.c.id == pid),
    ):
        with pytest.raises(ConstraintViolation, match=r"(?i)check"), store.engine.begin() as conn:
            conn.execute(table.update().where(where).values({column: value}))
    assert store.reads.get_occurrence(occ.id) == occ


async def test_one_locked_account_never_fails_another_payment_in_the_batch(
    postgres_url: str,
) -> None:
    """Finding 2: a lock timeout on one account (held by another transaction) failed every
    settle of the same group commit. Now the others commit, and the blocked one is an
    infrastructure error (retried, never counted as an attempt), not a failure."""
    engine = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"options": "-c lock_timeout=300ms"},
    )
    store = Store(engine)
    store.migrate()
    accounts(store, "alice", "bob", "carol", "dave")
    payment(store, "alice", "bob")
    payment(store, "carol", "dave")
    occs = store.payments.materialize_due(T0, T0)
    claims = [claimed(c) for c in store.execution.claim_many([(o.id, o.key) for o in occs], T0)]
    carol = store.accounts.get_account("carol")
    with ThreadPoolExecutor(max_workers=4) as pool, engine.connect() as blocker:
        blocker.execute(
            select(t.accounts.c.id).where(t.accounts.c.id == carol.id).with_for_update()
        )
        ledger = LedgerExecutor(store, SystemClock(), pool)
        results = await asyncio.gather(
            *(ledger.execute(order_of(c)) for c in claims), return_exceptions=True
        )
        blocker.rollback()
    ok, blocked = results
    assert not isinstance(ok, BaseException) and ok.outcome == Outcome.SUCCEEDED
    assert isinstance(blocked, InfrastructureError)
    assert store.accounts.get_account("bob").balance == 11_000
    assert store.reads.get_occurrence(claims[1].occurrence.id).state == S.EXECUTING
    store.close()


def test_an_infrastructure_release_does_not_count_as_an_attempt(store: Store) -> None:
    accounts(store, "alice", "bob")
    payment(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    first = claimed(store.execution.claim(occ.id, T0))
    assert first.attempt == 1
    done = store.execution.finish_many(
        [Finish(first, S.RETRYING, "database error", uncount=True)], T0
    )
    assert done == [True]
    assert store.reads.get_occurrence(occ.id).attempts == 0
    again = claimed(store.execution.claim(occ.id, T0))
    assert again.attempt == 1  # still the payment's first attempt


def test_pg_lock_timeout_engine_option_is_honoured(postgres_url: str) -> None:
    """The batch test above relies on the engine's lock_timeout reaching the server."""
    engine = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"options": "-c lock_timeout=300ms"},
    )
    with engine.connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "300ms"
    engine.dispose()
