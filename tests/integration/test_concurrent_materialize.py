"""Two schedulers materializing the same payment at the same instant on PostgreSQL.

Regression (found by python -m paysched.chaos, fault "double_tick"): the occurrence insert
said ON CONFLICT (payment_id, due_at) DO NOTHING, but occurrences also have UNIQUE(key), and
PostgreSQL only skips conflicts on the named arbiter index. When the other transaction's row
landed between the arbiter check and the index insertion, the insert raised UniqueViolation
on uq_occurrences_key: the whole tick failed (and `schedule_now` after creating a payment
raised although the payment was stored).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from paysched.db.store import Store

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture
def stores(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    a, b = Store.connect(postgres_url), Store.connect(postgres_url)
    a.migrate()
    yield a, b
    a.close()
    b.close()


def test_two_schedulers_materialize_the_same_occurrence_without_error(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    a.accounts.create_account("alice", "USD", T0)
    a.accounts.create_account("bob", "USD", T0)
    rounds = 500
    ids = [
        a.payments.create_payment(
            payer="alice",
            payee="bob",
            amount=1,
            currency="USD",
            due_at=T0 + timedelta(seconds=i, microseconds=5467),
            cron=None,
            timezone=None,
            memo="",
            now=T0 - timedelta(hours=1),
        ).id
        for i in range(rounds)
    ]
    barrier = threading.Barrier(2)
    created: list[int] = []
    errors: list[BaseException] = []

    def scheduler(store: Store) -> None:
        for i, pid in enumerate(ids):
            barrier.wait()
            try:
                now = T0 + timedelta(seconds=i)
                horizon = now + timedelta(seconds=1)
                created.extend(o.id for o in store.payments.materialize_due(now, horizon, [pid]))
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=scheduler, args=(s,)) for s in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(created) == len(set(created)) == rounds  # each occurrence created once
    assert len(a.reads.all_occurrences()) == rounds
