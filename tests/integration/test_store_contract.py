"""One contract for the store, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from paysched.db.store import Claim, Finish, LostRace, NoClaim, Store, transitions
from paysched.domain import OccurrenceState, PaymentState
from paysched.errors import Conflict, InsufficientFunds, InvalidInput, NotFound

S = OccurrenceState
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def funded(store: Store, balance: int = 10_000) -> None:
    store.accounts.create_account("alice", "USD", T0)
    store.accounts.create_account("bob", "USD", T0)
    store.accounts.deposit("alice", balance, T0)


def one_time(store: Store, amount: int = 1_000, due: datetime = T0) -> int:
    payment = store.payments.create_payment(
        payer="alice",
        payee="bob",
        amount=amount,
        currency="USD",
        due_at=due,
        cron=None,
        timezone=None,
        memo="",
        now=T0 - timedelta(hours=1),
    )
    return payment.id


def test_accounts_and_deposits(store: Store) -> None:
    funded(store, 12_34)
    assert store.accounts.get_account("alice").balance == 1234
    with pytest.raises(Conflict):
        store.accounts.create_account("alice", "USD", T0)
    with pytest.raises(NotFound):
        store.accounts.get_account("nobody")
    assert store.accounts.ledger_report().balanced


def test_payment_validation_names_the_field(store: Store) -> None:
    funded(store)
    store.accounts.create_account("eur", "EUR", T0)
    cases = [({"payee": "nobody"}, "to"), ({"payee": "eur"}, "to"), ({"payee": "alice"}, "to")]
    for change, field in cases:
        fields = (
            dict(
                payer="alice",
                payee="bob",
                amount=5,
                currency="USD",
                due_at=T0,
                cron=None,
                timezone=None,
                memo="",
                now=T0,
            )
            | change
        )
        with pytest.raises(InvalidInput) as info:
            store.payments.create_payment(**fields)  # type: ignore[arg-type]
        assert info.value.field == field


def test_materialize_is_idempotent_and_respects_the_window(store: Store) -> None:
    funded(store)
    soon = one_time(store, due=T0 + timedelta(minutes=2))
    later = one_time(store, due=T0 + timedelta(minutes=30))
    created = store.payments.materialize_due(T0, T0 + timedelta(minutes=5))
    assert [o.payment_id for o in created] == [soon]
    assert created[0].state == S.SCHEDULED
    assert store.payments.materialize_due(T0, T0 + timedelta(minutes=5)) == []
    assert store.payments.get_payment(soon).state == PaymentState.DONE
    assert store.payments.get_payment(later).next_due_at == T0 + timedelta(minutes=30)
    assert store.payments.mark_queued([created[0].id], T0) == 1
    assert store.reads.get_occurrence(created[0].id).state == S.QUEUED


def test_recurring_payment_advances_in_its_time_zone(store: Store) -> None:
    funded(store)
    payment = store.payments.create_payment(
        payer="alice",
        payee="bob",
        amount=100,
        currency="USD",
        due_at=None,
        cron="0 9 * * *",
        timezone="America/New_York",
        memo="",
        now=T0,
    )
    assert payment.next_due_at == datetime(2026, 11, 28, 14, tzinfo=UTC)  # 09:00 EST
    created = store.payments.materialize_due(T0, T0 + timedelta(days=3))
    assert [o.due_at.hour for o in created] == [14, 14, 14]
    assert store.payments.get_payment(payment.id).state == PaymentState.ACTIVE


def test_concurrent_schedulers_create_each_occurrence_once(store: Store) -> None:
    funded(store)
    for i in range(40):
        one_time(store, amount=10, due=T0 + timedelta(seconds=i))
    results: list[int] = []
    barrier = threading.Barrier(4)

    def tick() -> None:
        barrier.wait()
        results.append(len(store.payments.materialize_due(T0, T0 + timedelta(minutes=5))))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(results) == 40
    assert len(store.reads.all_occurrences()) == 40


def test_claim_settle_moves_money_exactly_once(store: Store) -> None:
    funded(store)
    one_time(store, amount=2_500)
    (occ,) = store.payments.materialize_due(T0, T0)
    first = store.execution.claim(occ.id, T0)
    assert isinstance(first, Claim) and first.attempt == 1
    # The queue redelivers (stall): a second worker takes over and bumps the fence.
    second = store.execution.claim(occ.id, T0 + timedelta(seconds=1))
    assert isinstance(second, Claim) and second.fence == first.fence + 1
    assert store.execution.settle_transfer(first, T0) is False  # the stale holder is fenced out
    assert store.execution.settle_transfer(second, T0) is True
    assert store.execution.settle_transfer(second, T0) is False  # and nobody settles twice
    assert store.execution.claim(occ.id, T0) == NoClaim("final", S.SUCCEEDED)
    assert store.accounts.get_account("alice").balance == 7_500
    assert store.accounts.get_account("bob").balance == 2_500
    done = store.reads.get_occurrence(occ.id)
    # The takeover continued the same attempt under a new fence: one attempt, one takeover.
    assert done.state == S.SUCCEEDED and done.attempts == 1 and done.takeovers == 1
    assert done.started_at == T0  # lateness counts from the first claim
    assert store.accounts.ledger_report().balanced
    history = [(t.from_state, t.to_state) for t in store.reads.transitions_of([occ.id])]
    assert history == [
        (None, S.SCHEDULED),
        (S.SCHEDULED, S.EXECUTING),
        (S.EXECUTING, S.EXECUTING),
        (S.EXECUTING, S.SUCCEEDED),
    ]


def test_retry_by_hand_starts_takeovers_afresh(store: Store) -> None:
    """A job that kept killing its workers is parked in needs_review; a person's --retry sends
    it again with its takeovers reset, or it would be parked again at its first claim."""
    funded(store)
    one_time(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    for i in range(4):  # the first claim, then three takeovers
        claim = store.execution.claim(occ.id, T0 + timedelta(seconds=i))
    assert isinstance(claim, Claim) and claim.occurrence.takeovers == 3
    assert store.execution.finish(claim, S.NEEDS_REVIEW, T0, "its workers died 3 times")
    parked = store.execution.unresolved(occ.id)
    assert parked.occurrence.state == S.NEEDS_REVIEW and parked.occurrence.takeovers == 3
    assert store.execution.resolve(
        parked, S.QUEUED, T0, "resolved by hand: provider says nothing arrived"
    )
    again = store.reads.get_occurrence(occ.id)
    assert again.state == S.QUEUED and again.takeovers == 0
    fresh = store.execution.claim(occ.id, T0 + timedelta(minutes=1))
    assert isinstance(fresh, Claim) and fresh.occurrence.takeovers == 0


def test_insufficient_funds_rolls_back_whole(store: Store) -> None:
    funded(store, 500)
    one_time(store, amount=1_000)
    (occ,) = store.payments.materialize_due(T0, T0)
    claim = store.execution.claim(occ.id, T0)
    assert isinstance(claim, Claim)
    with pytest.raises(InsufficientFunds):
        store.execution.settle_transfer(claim, T0)
    assert store.reads.get_occurrence(occ.id).state == S.EXECUTING
    assert store.accounts.get_account("alice").balance == 500
    assert store.execution.finish(claim, S.FAILED, T0, "insufficient funds")
    assert store.reads.get_occurrence(occ.id).reason == "insufficient funds"
    assert store.accounts.ledger_report().balanced


def test_batches_settle_each_claim_on_its_own_merits(store: Store) -> None:
    """One transaction, one result per item: a payer short of funds fails its own payment
    only, balances are checked in order within the batch, and a stale fence is refused."""
    funded(store, 3_000)
    store.accounts.create_account("carol", "USD", T0)
    for _ in range(3):
        one_time(store, amount=1_000)
    store.payments.create_payment(
        payer="carol",
        payee="bob",
        amount=1,
        currency="USD",
        due_at=T0,
        cron=None,
        timezone=None,
        memo="",
        now=T0 - timedelta(hours=1),
    )
    one_time(store, amount=1_500)
    occs = store.payments.materialize_due(T0, T0)
    ids = [o.id for o in occs]
    claims = store.execution.claim_many([(i, None) for i in [*ids, 999_999]], T0)
    assert claims[-1] == NoClaim("missing")  # unknown id
    live = [c for c in claims if isinstance(c, Claim)]
    assert len(live) == 5
    stale = store.execution.claim(ids[0], T0)  # a takeover: the first claim is now stale
    assert isinstance(stale, Claim)
    results = store.execution.settle_many([*live, stale], T0)
    assert results[0] is False  # fenced out by the takeover
    assert results[1] is True and results[2] is True
    assert isinstance(results[3], InsufficientFunds)  # carol has nothing
    assert isinstance(results[4], InsufficientFunds)  # 1,000 left after two, 1,500 asked
    assert results[5] is True  # the takeover settles the first payment
    assert store.accounts.get_account("alice").balance == 0
    assert store.accounts.get_account("bob").balance == 3_000
    assert store.accounts.ledger_report().balanced
    finished = store.execution.finish_many(
        [
            Finish(live[3], S.FAILED, "insufficient funds", ()),
            Finish(live[4], S.RETRYING, "try later", ()),
            Finish(live[1], S.FAILED, "too late", ()),
        ],  # already succeeded
        T0,
    )
    assert finished == [True, True, False]
    states = {o.id: o.state for o in store.reads.all_occurrences()}
    assert [states[i] for i in ids] == [S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED, S.FAILED, S.RETRYING]


def test_cancel_stops_pending_occurrences(store: Store) -> None:
    funded(store)
    pid = one_time(store)
    (occ,) = store.payments.materialize_due(T0, T0)
    result = store.control.cancel_payment(pid, T0, "cancelled by user")
    assert [o.id for o in result.cancelled] == [occ.id] and result.in_flight == []
    assert store.execution.claim(occ.id, T0) == NoClaim("final", S.CANCELLED)
    assert store.reads.get_occurrence(occ.id).state == S.CANCELLED
    with pytest.raises(Conflict):
        store.control.cancel_payment(pid, T0, "again")


def test_ledger_report_detects_tampering(store: Store) -> None:
    funded(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE accounts SET balance = balance + 1 WHERE name = 'bob'")
    report = store.accounts.ledger_report()
    assert not report.balanced
    assert any("bob" in p for p in report.problems)


def test_times_come_back_aware_utc(store: Store) -> None:
    funded(store)
    pid = one_time(store, due=datetime(2026, 11, 28, 10, 0, 0, 123_000, tzinfo=UTC))
    payment = store.payments.get_payment(pid)
    assert payment.due_at == datetime(2026, 11, 28, 10, 0, 0, 123_000, tzinfo=UTC)
    assert payment.due_at is not None and payment.due_at.tzinfo is not None


def test_a_batch_of_changes_is_all_or_nothing(store: Store) -> None:
    """Claims and finishes of many occurrences in one batch (PostgreSQL writes them and their
    history with one statement): each gets its own compare-and-set and history row; an id twice
    in a batch is a claim and a takeover; one stale change in a batch writes nothing at all."""
    funded(store)
    for _ in range(4):
        one_time(store, amount=10)
    ids = [o.id for o in store.payments.materialize_due(T0, T0)]
    claims = store.execution.claim_many(
        [(ids[0], None), (ids[1], None), (ids[1], None), (ids[2], None), (ids[3], None)], T0
    )
    first, taken, second, third, fourth = claims
    assert isinstance(first, Claim) and isinstance(second, Claim) and isinstance(third, Claim)
    assert isinstance(taken, Claim) and isinstance(fourth, Claim)
    assert second.fence == taken.fence + 1
    finishes = [
        Finish(first, S.SUCCEEDED, None),
        Finish(second, S.FAILED, "no"),
        Finish(third, S.RETRYING, "later"),
    ]
    assert store.execution.finish_many(finishes, T0) == [True, True, True]
    done = {o.id: o for o in store.reads.all_occurrences()}
    assert [done[i].state for i in ids] == [S.SUCCEEDED, S.FAILED, S.RETRYING, S.EXECUTING]
    assert done[ids[0]].finished_at == T0 and done[ids[2]].finished_at is None
    assert done[ids[1]].reason == "no" and done[ids[1]].takeovers == 1
    history = {
        (t.occurrence_id, t.from_state, t.to_state, t.reason)
        for t in store.reads.transitions_of(ids)
        if t.from_state is not None
    }
    assert history == {
        (ids[0], S.SCHEDULED, S.EXECUTING, None),
        (ids[0], S.EXECUTING, S.SUCCEEDED, None),
        (ids[1], S.SCHEDULED, S.EXECUTING, None),
        (ids[1], S.EXECUTING, S.EXECUTING, "taken over after its worker stalled or died"),
        (ids[1], S.EXECUTING, S.FAILED, "no"),
        (ids[2], S.SCHEDULED, S.EXECUTING, None),
        (ids[2], S.EXECUTING, S.RETRYING, "later"),
        (ids[3], S.SCHEDULED, S.EXECUTING, None),
    }
    # A batch with one change whose row moved on (a stale fence) writes nothing at all.
    executing, retrying = store.reads.get_occurrence(ids[3]), store.reads.get_occurrence(ids[2])
    ok = transitions.Change(executing, replace(executing, state=S.FAILED, reason="x"))
    stale = transitions.Change(
        replace(retrying, fence=retrying.fence - 1), replace(retrying, state=S.EXECUTING)
    )
    rows = len(store.reads.transitions_of(ids))
    with pytest.raises(LostRace), store.engine.begin() as conn:
        transitions.apply(conn, [ok, stale], T0)
    assert store.reads.get_occurrence(ids[3]) == executing
    assert store.reads.get_occurrence(ids[2]) == retrying
    assert len(store.reads.transitions_of(ids)) == rows
