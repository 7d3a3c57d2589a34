"""A person's write that PostgreSQL picks as a deadlock's victim runs again (on PostgreSQL
only: SQLite has one writer at a time and no deadlocks)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text

from paysched.db import tables as t
from paysched.db.store import Store
from paysched.domain import OccurrenceState
from tests.conftest import wait_for_sync
from tests.integration.test_money_path import T0, accounts, payment, waiting_on_a_lock


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    s = Store.connect(postgres_url)
    s.migrate()
    yield s
    s.close()


def test_a_cancel_chosen_as_a_deadlock_victim_runs_again(pg_store: Store) -> None:
    """Another transaction holds the occurrence and then wants the payment the cancel holds
    (the reverse of the store's lock order; none of paysched's own does this any more): a
    real deadlock. PostgreSQL aborts the cancel, which waited first; it must run again once
    the other is done and cancel, not fail with the deadlock."""
    store = pg_store
    accounts(store, "alice", "bob")
    pid = payment(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    other = store.engine.connect()
    try:
        other.begin()
        # Only the cancel looks for the deadlock (after the default 1 s): it is the victim.
        other.execute(text("SET LOCAL deadlock_timeout = '60s'"))
        other.execute(
            select(t.occurrences.c.id).where(t.occurrences.c.id == occ.id).with_for_update()
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            cancel = pool.submit(store.control.cancel_payment, pid, T0, "cancelled by user")
            wait_for_sync(lambda: cancel.done() or waiting_on_a_lock(store), 30, "the cancel")
            assert not cancel.done(), cancel.result()
            # Waits for the cancel's payment lock until the cancel is aborted as the victim.
            other.execute(select(t.payments.c.id).where(t.payments.c.id == pid).with_for_update())
            other.commit()
            result = cancel.result(timeout=30)
    finally:
        other.close()
    assert [o.id for o in result.cancelled] == [occ.id]
    assert store.reads.get_occurrence(occ.id).state == OccurrenceState.CANCELLED
