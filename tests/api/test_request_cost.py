"""What one request costs the database: statements, transactions, pool checkouts. Each of
these was most of its route's time (py-spy under wrk, bench/measure_api_wrk.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import event

from paysched.db.store import Store
from paysched.domain import PaymentState
from tests.api.conftest import Api

PAYMENT = {"from": "alice", "to": "bob", "amount": "1.00", "in": "30s"}  # inside the look-ahead


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    checkouts: int = 0
    commits: int = 0


@contextmanager
def counting(store: Store) -> Iterator[Counted]:
    engine = store.engine
    seen = Counted()

    def statement(_c: Any, _cur: Any, sql: str, *_: Any) -> None:
        if not sql.startswith("BEGIN"):  # SQLite's own BEGIN (see db.engine)
            seen.statements.append(" ".join(sql.split()))

    def checkout(*_: Any) -> None:
        seen.checkouts += 1

    def commit(*_: Any) -> None:
        seen.commits += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine.pool, "checkout", checkout)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine.pool, "checkout", checkout)
        event.remove(engine, "commit", commit)


async def _accounts(api: Api) -> None:
    for name in ("alice", "bob"):
        assert (await api.post("/v1/accounts", {"name": name})).status_code == 201
    r = await api.post("/v1/accounts/alice/deposits", {"amount": "100.00"})
    assert r.status_code in (200, 201), r.text


async def test_a_create_is_one_transaction_then_its_enqueue(api: Api) -> None:
    await _accounts(api)
    await api.post("/v1/payments", PAYMENT, "write", key="first")  # the key's last_used_at
    with counting(api.app.store) as seen:
        r = await api.post("/v1/payments", PAYMENT, "write", key="k1")
    assert r.status_code == 201, r.text
    # The key's lookup; the create with its idempotency record and occurrence; its job marked
    # queued after the enqueue. It was eight checkouts and five transactions.
    assert (seen.checkouts, seen.commits) == (3, 2), seen
    inserts = [s.split(" (")[0] for s in seen.statements if s.startswith("INSERT")]
    assert inserts[:3] == [
        "INSERT INTO idempotency_keys",
        "INSERT INTO payments",
        "INSERT INTO occurrences",
    ], inserts
    detail = (await api.get(f"/v1/payments/{r.json()['id']}")).json()
    assert [o["state"] for o in detail["occurrences"]] == ["queued"]
    again = await api.post("/v1/payments", PAYMENT, "write", key="k1")
    assert again.status_code == 201 and again.json() == r.json()
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_payment_detail_is_two_statements(api: Api) -> None:
    await _accounts(api)
    r = await api.post("/v1/payments", PAYMENT, "write", key="k")
    await api.get("/v1/payments")  # the read key's last_used_at
    with counting(api.app.store) as seen:
        got = await api.get(f"/v1/payments/{r.json()['id']}")
    assert got.status_code == 200, got.text
    # The key's lookup; the payment with its occurrences, their transitions and its status;
    # its notifications; what people did to it (its actions), on the same connection. It was
    # six statements on two checkouts, each with BEGIN/ROLLBACK.
    assert (seen.checkouts, len(seen.statements), seen.commits) == (2, 4, 0), seen


async def test_the_first_page_of_a_detail_reads_as_the_whole_history(api: Api) -> None:
    """The detail's one statement against the unpaged read of the same payment: newest 20
    occurrences, each with its transitions, the status, and whether older ones follow."""
    await _accounts(api)
    app, store = api.app, api.app.store
    now = app.clock.now()
    fields: dict[str, Any] = dict(
        payer="alice",
        payee="bob",
        amount=100,
        currency="USD",
        due_at=None,
        timezone=None,
        memo="m",
        now=now,
    )
    every = await app.db(lambda: store.payments.create_payment(cron="* * * * *", **fields))
    once = await app.db(
        lambda: store.payments.create_payment(cron=None, **fields | {"due_at": now})
    )
    bare = await app.db(lambda: store.payments.create_payment(cron="0 0 1 1 *", **fields))
    made = await app.db(store.payments.materialize_due, now, now + timedelta(minutes=30))
    await app.db(store.payments.mark_queued, [o.id for o in made[::3]], now)
    assert (await app.db(store.payments.get_payment, once.id)).state == PaymentState.DONE
    for payment in (every, once, bare):
        whole = await app.db(store.reads.payment_history, payment.id)
        first = await app.db(functools.partial(store.reads.payment_history, payment.id, page=20))
        newest = list(reversed(whole.occurrences))
        assert first.payment == whole.payment
        assert first.occurrences == newest[:20]
        assert first.transitions == {o.id: whole.transitions[o.id] for o in newest[:20]}
        assert first.more == (len(newest) > 20)
        # Only a done payment's status depends on its occurrences (views.payment_status).
        done = whole.payment.state == PaymentState.DONE
        status = (whole.last_state, whole.unfinished) if done else (None, False)
        assert (first.last_state, first.unfinished) == status
        assert first.notifications == whole.notifications


async def test_a_reused_key_is_told_before_the_stores_checks(api: Api) -> None:
    """The key is reserved in the create's transaction, after the request's own checks and
    before the store's, as when it had a transaction of its own: another body naming an
    account that does not exist is the key's reuse, not a bad account."""
    await _accounts(api)
    assert (await api.post("/v1/payments", PAYMENT, "write", key="k")).status_code == 201
    other = await api.post("/v1/payments", PAYMENT | {"to": "nobody"}, "write", key="k")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    unparsable = await api.post("/v1/payments", PAYMENT | {"in": "soon"}, "write", key="k")
    assert unparsable.status_code == 422 and unparsable.json()["field"] == "in"
