"""The chaos invariants catch what they claim to catch: each is shown a broken end state (built
in a real database) and must name it, and a sound one it must pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from paysched.chaos.invariants import Result, check
from paysched.chaos.model import (
    CancelRecord,
    PauseRecord,
    PlannedPayment,
    ProviderView,
    SkipRecord,
)
from paysched.db import tables as t
from paysched.db.store import Claim, Finish, Store
from paysched.domain import OccurrenceState

S = OccurrenceState
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
DEPOSITS = {"payer": 100_000}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.connect(f"sqlite:///{tmp_path / 'paysched.db'}")
    s.migrate()
    s.accounts.create_account("payer", "USD", T0)
    s.accounts.create_account("payee", "USD", T0)
    s.accounts.deposit("payer", DEPOSITS["payer"], T0)
    yield s
    s.close()


def payment(store: Store, amount: int = 1_000, cron: str | None = None) -> PlannedPayment:
    p = store.payments.create_payment(
        payer="payer",
        payee="payee",
        amount=amount,
        currency="USD",
        due_at=None if cron else T0,
        cron=cron,
        timezone=None,
        memo="",
        now=T0 - timedelta(seconds=1),
    )
    assert p.next_due_at is not None
    return PlannedPayment(p.id, "payer", "payee", amount, p.next_due_at, cron)


def claimed(store: Store, planned: PlannedPayment, at: datetime = T0) -> Claim:
    store.payments.materialize_due(at, at)
    (occ,) = store.reads.occurrences_of(planned.id)
    claim = store.execution.claim(occ.id, at)
    assert isinstance(claim, Claim)
    return claim


def results(store: Store, planned: list[PlannedPayment], **kw: Any) -> dict[str, Result]:
    found = check(store, 7, planned, DEPOSITS, T0 + timedelta(minutes=5), **kw)
    return {r.name: r for r in found}


def problems(result: Result) -> list[str]:
    return [v["problem"] for v in result.violations]


def test_a_sound_run_passes_every_invariant(store: Store) -> None:
    paid, cancelled = payment(store), payment(store, 2_000)
    assert store.execution.settle_transfer(claimed(store, paid), T0)
    done = store.control.cancel_payment(cancelled.id, T0, "changed my mind")
    record = CancelRecord(
        cancelled.id,
        T0 + timedelta(milliseconds=1),
        "later",
        [o.id for o in done.cancelled],
        [],
        {o.id: o for o in store.reads.occurrences_of(cancelled.id)},
    )
    found = results(store, [paid, cancelled], cancels=[record])
    assert {name: problems(r) for name, r in found.items() if not r.ok} == {}


def test_cancel_wins_names_a_claim_after_the_cancel(store: Store) -> None:
    planned = payment(store)
    claim = claimed(store, planned, T0 + timedelta(seconds=5))
    assert store.execution.settle_transfer(claim, T0 + timedelta(seconds=5))
    # The harness saw the cancel commit at T0 with the occurrence cancelled, yet it was
    # claimed 5 s later and paid: a claim that ignored the cancel.
    seen = replace(claim.occurrence, state=S.CANCELLED)
    record = CancelRecord(planned.id, T0, "claim", [seen.id], [], {seen.id: seen})
    found = problems(results(store, [planned], cancels=[record])["cancel_wins"])
    assert any("cancelled but is" in p for p in found)  # the payment is not cancelled
    assert any("claimed after its payment's cancel committed" in p for p in found)
    assert "was cancelled at the cancel, is succeeded now" in found
    # An occurrence the snapshot never saw was created after the cancel.
    unseen = CancelRecord(planned.id, T0 + timedelta(minutes=1), "materialize", [], [], {})
    assert "created after its payment's cancel committed" in problems(
        results(store, [planned], cancels=[unseen])["cancel_wins"]
    )


def test_cancel_wins_lets_a_cancel_leave_a_taken_over_retry_in_flight(store: Store) -> None:
    """Issue 19 finding 1: a retrying occurrence whose attempt was taken over from a stalled
    worker may have been charged by that worker's request, so a cancel leaves it in flight
    (to be asked about and retried under its key). The snapshot holding it retrying is sound;
    the same snapshot of a retry nobody took over is a cancel that failed to stop it."""
    planned = payment(store, cron="0 9 * * *")  # recurring: its cancel commits
    stalled = claimed(store, planned)  # worker A sent the charge and stalled
    takeover = store.execution.claim(stalled.occurrence.id, T0)  # worker B
    assert isinstance(takeover, Claim) and takeover.occurrence.takeovers == 1
    assert store.execution.finish_many(
        [Finish(takeover, S.RETRYING, "provider unreachable")], T0
    ) == [True]
    done = store.control.cancel_payment(planned.id, T0 + timedelta(seconds=1), "changed my mind")
    (occ,) = done.in_flight
    assert (occ.state, done.cancelled) == (S.RETRYING, [])
    record = CancelRecord(
        planned.id, T0 + timedelta(seconds=1), "takeover", [], [occ.id], {occ.id: occ}
    )
    retry = store.execution.claim(occ.id, T0 + timedelta(seconds=2))  # the retry goes on, same key
    assert isinstance(retry, Claim) and store.execution.settle_transfer(
        retry, T0 + timedelta(seconds=2)
    )
    assert results(store, [planned], cancels=[record])["cancel_wins"].ok

    record.snapshot = {occ.id: replace(occ, takeovers=0)}
    assert problems(results(store, [planned], cancels=[record])["cancel_wins"]) == [
        "still retrying right after its payment's cancel committed"
    ]


def test_provider_charged_once_names_every_mismatch(store: Store) -> None:
    paid, declined = payment(store, 1_234), payment(store, 500)
    a, b = claimed(store, paid), claimed(store, declined)
    assert store.execution.finish_many(
        [
            Finish(a, S.SUCCEEDED, None, reference="ch_1"),
            Finish(b, S.FAILED, "declined", reference="ch_2"),
        ],
        T0,
    ) == [True, True]

    def charge(key: str, status: str, amount: str) -> dict[str, Any]:
        return {"key": key, "status": status, "amount": amount, "from": "payer", "to": "payee"}

    start = {"payer": Decimal("1000.00"), "payee": Decimal("0.00")}
    good = ProviderView(
        [
            charge(a.occurrence.key, "succeeded", "12.34"),
            charge(b.occurrence.key, "declined", "5.00"),
        ],
        {"payer": Decimal("987.66"), "payee": Decimal("12.34")},
        start,
    )
    found = results(store, [paid, declined], provider=good)
    assert found["provider_charged_once"].ok and found["balances_exact"].ok

    bad = ProviderView(
        [charge(b.occurrence.key, "succeeded", "5.00"), charge("pay-99-1", "succeeded", "1.00")],
        {"payer": Decimal("1000.00"), "payee": Decimal("0.00")},
        start,
    )
    found = results(store, [paid, declined], provider=bad)
    named = problems(found["provider_charged_once"])
    assert "succeeded, but the provider has no succeeded charge for its key" in named
    assert "provider charged it but the occurrence is failed" in named
    assert "provider charge pay-99-1 matches no occurrence" in named
    assert any("provider account payer" in p for p in problems(found["balances_exact"]))


def test_infrastructure_failures_and_open_unknowns_are_named(store: Store) -> None:
    broken, unknown = payment(store), payment(store, 700)
    x, y = claimed(store, broken), claimed(store, unknown)
    assert store.execution.finish_many(
        [
            Finish(x, S.FAILED, "database error: (psycopg.OperationalError) server closed"),
            Finish(y, S.UNKNOWN, "provider timed out", resolve_at=T0),
        ],
        T0,
    ) == [True, True]
    found = results(store, [broken, unknown])
    assert problems(found["no_failure_from_infrastructure"]) == [
        "failed with an infrastructure reason"
    ]
    assert problems(found["unknowns_resolved"]) == ["an unknown outcome is still unknown"]
    assert "due occurrence is still unknown" in problems(found["all_due_final"])


def test_recurring_complete_names_a_missing_cron_time(store: Store) -> None:
    planned = payment(store, 300, cron="*/2 * * * * *")
    store.payments.materialize_due(T0 + timedelta(seconds=10), T0 + timedelta(seconds=10))
    assert results(store, [planned])["recurring_complete"].ok
    # Planned to start two seconds earlier than its first occurrence: that one was lost.
    lost = PlannedPayment(
        planned.id, "payer", "payee", 300, planned.due_at - timedelta(seconds=2), planned.cron
    )
    (violation,) = results(store, [lost])["recurring_complete"].violations
    assert violation["missing"] == [lost.due_at.isoformat()]


def test_pause_holds_names_a_claim_and_a_creation_inside_a_pause(store: Store) -> None:
    planned = payment(store)
    at = T0 + timedelta(seconds=5)
    claim = claimed(store, planned, at)  # created and claimed at T0 + 5 s
    assert store.execution.settle_transfer(claim, at)
    seen = store.reads.transitions_of([claim.occurrence.id])

    def record(paused_s: float, resumed_s: float, before: Any) -> PauseRecord:
        return PauseRecord(
            planned.id,
            T0 + timedelta(seconds=paused_s),
            [],
            T0 + timedelta(seconds=resumed_s),
            T0 + timedelta(seconds=resumed_s),
            [],
            "resumed",
            before,
        )

    # Paused after it ran, or (the read before the resume did not see them) the claim and the
    # creation committed after the resume although stamped before it: sound.
    for sound in (record(6, 8, seen), record(1, 9, [])):
        assert results(store, [planned], pauses=[sound])["pause_holds"].ok
    # The harness saw the pause commit at T0 + 1 s, and before resuming at T0 + 9 s read a
    # creation and a claim at T0 + 5 s: both happened while the payment was paused.
    found = problems(results(store, [planned], pauses=[record(1, 9, seen)])["pause_holds"])
    assert len(found) == 2
    assert found[0].startswith("created at") and "while its payment was paused" in found[0]
    assert found[1].startswith("started at") and "while its payment was paused" in found[1]
    # A pause that never ended is named too.
    recurring = payment(store, 300, cron="*/2 * * * * *")
    store.control.pause(recurring.id, T0)
    assert problems(results(store, [planned, recurring])["pause_holds"]) == [
        f"payment {recurring.id} is still paused at the end"
    ]


def test_missed_only_by_policy_names_a_miss_its_policy_does_not_allow(store: Store) -> None:
    late_after = timedelta(seconds=1)
    tuned = Store(store.engine, late_after=late_after)  # PAYSCHED_CATCHUP_LATE_AFTER=1s
    pid = tuned.payments.create_payment(
        payer="payer",
        payee="payee",
        amount=100,
        currency="USD",
        due_at=None,
        cron="* * * * * *",
        timezone=None,
        memo="",
        now=T0 - timedelta(seconds=1),
        catchup="latest",
    ).id
    planned = PlannedPayment(pid, "payer", "payee", 100, T0, "* * * * * *", "latest")
    # Found 10 s late: T0 .. T0 + 8 s are late, "latest" runs T0 + 8 s and misses the rest.
    made = tuned.payments.materialize_due(T0 + timedelta(seconds=10), T0 + timedelta(seconds=10))
    missed = [o for o in made if o.state == S.MISSED]
    assert [o.due_at for o in missed] == [T0 + timedelta(seconds=s) for s in range(8)]

    def named(**kw: Any) -> list[str]:
        return problems(results(store, [planned], **kw)["missed_only_by_policy"])

    assert named(late_after=late_after) == []
    # A resume that reported missed what is not missed, or not then (it was missed at 10 s).
    running = next(o for o in made if o.state == S.SCHEDULED)
    resumed = T0 + timedelta(seconds=11)
    bogus = PauseRecord(pid, T0, [], resumed, resumed, [running.id, missed[0].id], "resumed", [])
    assert named(late_after=late_after, pauses=[bogus]) == [
        "its resume reported it missed, but it is scheduled",
        f"its resume at {resumed.isoformat()} reported it missed, but it was not missed then, "
        "or not late then",
    ]
    # Under the default minute none of them was late when it was missed.
    assert len(named()) == 8 and all("not more than 60s after it was due" in p for p in named())
    # The same end state for a payment that runs all it missed: every miss is wrong.
    with store.engine.begin() as conn:
        conn.execute(update(t.payments).where(t.payments.c.id == pid).values(catchup="all"))
    assert named(late_after=late_after) == ["missed, but its payment's catch-up policy is all"] * 8


def test_skip_holds_names_a_skipped_occurrence_that_ran(store: Store) -> None:
    sound, broken = payment(store, cron="*/2 * * * * *"), payment(store, 700, cron="0 * * * *")
    skipped = store.control.skip_next(sound.id, T0, "skipped from the chat")
    records = [SkipRecord(sound.id, skipped.id, T0)]
    assert results(store, [sound, broken], skips=records)["skip_holds"].ok
    # A skip the harness saw commit, yet the occurrence ran and moved money: a claim that
    # did not see the skip.
    claim = claimed(store, broken, broken.due_at)
    assert store.execution.settle_transfer(claim, broken.due_at)
    ran = SkipRecord(broken.id, claim.occurrence.id, broken.due_at - timedelta(seconds=1))
    found = problems(results(store, [sound, broken], skips=[*records, ran])["skip_holds"])
    assert found == [
        f"skipped at {ran.committed_at.isoformat()}, is succeeded now",
        "claimed although it was skipped before it started",
        "money moved for an occurrence that was skipped",
    ]
