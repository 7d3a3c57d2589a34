"""The chaos harness's approvals: its invariant `approved_before_paid` names an occurrence that
ran without an approval, and passes one that ran after it; the harness's approver decides
each occurrence once, the second try refused (issue 24 item 4)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from paysched.actors import Actor
from paysched.chaos.approvals import Approver
from paysched.chaos.model import PlannedPayment
from paysched.db import tables as t
from paysched.db.store import Claim, Store
from paysched.domain import OccurrenceState
from tests.integration.test_chaos_invariants import DEPOSITS, T0, problems, results

S = OccurrenceState


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.connect(f"sqlite:///{tmp_path / 'paysched.db'}")
    s.migrate()
    s.accounts.create_account("payer", "USD", T0)
    s.accounts.create_account("payee", "USD", T0)
    s.accounts.deposit("payer", DEPOSITS["payer"], T0)
    yield s
    s.close()


def awaiting(store: Store, amount: int = 1_000) -> tuple[PlannedPayment, int]:
    p = store.payments.create_payment(
        payer="payer",
        payee="payee",
        amount=amount,
        currency="USD",
        due_at=T0,
        cron=None,
        timezone=None,
        memo="",
        now=T0 - timedelta(seconds=1),
        approval="required",
    )
    store.payments.materialize_due(T0, T0, [p.id])
    (occ,) = store.reads.occurrences_of(p.id)
    assert occ.state == S.AWAITING_APPROVAL
    return PlannedPayment(p.id, "payer", "payee", amount, T0, approval=True), occ.id


def pay(store: Store, occurrence_id: int) -> None:
    claim = store.execution.claim(occurrence_id, T0)
    assert isinstance(claim, Claim)
    assert store.execution.settle_transfer(claim, T0)


def test_approved_before_paid_names_one_paid_without_approval(store: Store) -> None:
    approved, first = awaiting(store)
    store.approvals.decide(first, True, Actor("cli", "chaos approver", "cli"), T0)
    pay(store, first)
    rejected, second = awaiting(store, 2_000)
    store.approvals.decide(second, False, Actor("cli", "chaos approver", "cli"), T0, "no")
    sound = results(store, [approved, rejected])
    assert {n: problems(r) for n, r in sound.items() if not r.ok} == {}
    # One that skipped its approval (as a claim that ignored the state would): scheduled
    # without an approver's decision in its history, then paid.
    sneaked, third = awaiting(store, 3_000)
    with store.engine.begin() as conn:
        conn.execute(
            update(t.occurrences).where(t.occurrences.c.id == third).values(state=S.SCHEDULED.value)
        )
    pay(store, third)
    found = results(store, [approved, rejected, sneaked])
    assert problems(found["approved_before_paid"]) == ["started though never approved"]


def test_the_approver_decides_each_once(store: Store) -> None:
    planned = [awaiting(store, 1_000 + i) for i in range(8)]
    approver = Approver(store, seed=3)
    approver.step(T0)
    states = [store.reads.get_occurrence(oid).state for _, oid in planned]
    assert S.AWAITING_APPROVAL not in states and set(states) <= {S.SCHEDULED, S.CANCELLED}
    assert len(approver.records) == 8
    assert all(r.again_refused for r in approver.records if r.twice)
    assert any(r.twice for r in approver.records)
    approver.step(T0)  # nothing left to decide
    assert len(approver.records) == 8
