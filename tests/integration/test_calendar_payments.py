"""Calendar payments in the store, on SQLite and PostgreSQL: keys tied to the nominal date,
business days, catch-up policy after downtime, pause / resume, skip-next, preview."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paysched.clock import to_ms
from paysched.db.store import NoClaim, Store
from paysched.db.store.payments import LATE_AFTER
from paysched.domain import Occurrence, OccurrenceState, PaymentState, occurrence_key
from paysched.errors import Conflict, InvalidInput
from paysched.inputs import PYTHON_NAMES, Calendar, recurrence_of
from paysched.recurrence import DATE_BUDGET, REQUEST_BUDGET
from tests.unit.test_recurrence import SPARSE, walked

S = OccurrenceState
T0 = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)  # a Monday


def funded(store: Store) -> None:
    for name in ("alice", "bob"):
        store.accounts.create_account(name, "EUR", T0 - timedelta(days=400))
    store.accounts.deposit("alice", 10**9, T0 - timedelta(days=400))


def rule(text: str, start: str, tz: str = "Europe/Berlin", **extra: str) -> str:
    cal = Calendar(rrule=text, start=start, **extra)  # type: ignore[arg-type]
    return recurrence_of(cal, tz, T0, PYTHON_NAMES)


def create(
    store: Store,
    now: datetime,
    *,
    recurrence: str | None = None,
    cron: str | None = None,
    catchup: str = "all",
    window: timedelta | None = None,
) -> int:
    return store.payments.create_payment(
        payer="alice",
        payee="bob",
        amount=100,
        currency="EUR",
        due_at=None,
        cron=cron,
        timezone="Europe/Berlin" if cron else None,
        memo="",
        now=now,
        recurrence=recurrence,
        catchup=catchup,
        catchup_window=window,
    ).id


def test_a_holiday_moves_the_due_time_not_the_key(store: Store) -> None:
    funded(store)
    # The 1st of each month at 09:00 Berlin, following business day (DE): 2027-01-01 is a
    # holiday (Friday), so it runs Monday 2027-01-04; its key keeps January 1st.
    pid = create(
        store,
        T0 - timedelta(days=10),
        recurrence=rule(
            "FREQ=MONTHLY;BYMONTHDAY=1", "2026-12-01T09:00", business_day="following", calendar="DE"
        ),
    )
    [occ] = store.payments.materialize_due(
        T0 - timedelta(days=10), T0 - timedelta(days=10) + timedelta(days=20), [pid]
    )
    nominal = datetime(2027, 1, 1, 8, 0, tzinfo=UTC)
    assert occ.key == occurrence_key(pid, to_ms(nominal))
    assert occ.due_at == datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
    assert occ.nominal_at == nominal
    # Materializing again (another scheduler, a retry) creates nothing new.
    assert store.payments.materialize_due(T0, T0 + timedelta(days=1), [pid]) == []
    assert len(store.reads.occurrences_of(pid)) == 1


@pytest.mark.parametrize(
    ("policy", "window", "late_runs"),
    [("all", None, 9), ("latest", None, 1), ("none", None, 0), ("all", timedelta(minutes=5), 4)],
)
def test_catchup_policy_after_downtime(
    store: Store, policy: str, window: timedelta | None, late_runs: int
) -> None:
    funded(store)
    pid = create(store, T0, cron="* * * * *", catchup=policy, window=window)
    # paysched was down for ten minutes: ten occurrences fell due meanwhile; nine of them more
    # than a minute ago (late), the last one 30 s ago (due now, not late: it always runs).
    now = T0 + timedelta(minutes=10, seconds=30)
    made = store.payments.materialize_due(now, now, [pid])
    assert len(made) == 10
    late = [o for o in made if o.due_at < now - LATE_AFTER]
    assert len(late) == 9
    assert made[-1].state == S.SCHEDULED
    runs = [o for o in late if o.state == S.SCHEDULED]
    missed = [o for o in made if o.state == S.MISSED]
    assert len(runs) == late_runs and len(missed) == 9 - late_runs
    if policy == "latest":
        assert runs == [late[-1]]
    if window is not None:
        assert all(o.due_at < now - window for o in missed)
    stored = {o.id: o for o in store.reads.occurrences_of(pid)}
    for occ in missed:
        assert stored[occ.id].state == S.MISSED and "missed" in (stored[occ.id].reason or "")


def test_pause_holds_claims_and_resume_applies_the_policy(store: Store) -> None:
    funded(store)
    pid = create(store, T0, cron="* * * * *", catchup="latest")
    first = store.payments.materialize_due(T0, T0 + timedelta(minutes=3), [pid])
    assert len(first) == 3
    held = store.control.pause(pid, T0)
    assert held.payment.state == PaymentState.PAUSED and len(held.occurrences) == 3
    claimed = store.execution.claim(first[0].id, T0 + timedelta(minutes=1))
    assert isinstance(claimed, NoClaim) and claimed.why == "paused"
    later = T0 + timedelta(minutes=30)
    assert store.payments.materialize_due(later, later, [pid]) == []
    assert store.reads.pending_occurrences(T0 + timedelta(hours=1)) == []  # reconcile leaves them
    with pytest.raises(Conflict):
        store.control.pause(pid, T0)
    resumed = store.control.resume(pid, T0 + timedelta(minutes=10))
    assert resumed.payment.state == PaymentState.ACTIVE
    assert len(resumed.missed) == 2 and len(resumed.occurrences) == 1  # the latest of three
    # What fell due after the held ones comes from materializing, by the same policy, and
    # "latest" is over all of them: one late occurrence runs in all, the most recent; those
    # due within the last minute are not late, and run.
    now = T0 + timedelta(minutes=10)
    store.payments.materialize_due(now, now, [pid])
    late = [o for o in store.reads.occurrences_of(pid) if o.due_at < now - LATE_AFTER]
    assert [o.due_at for o in late if o.state != S.MISSED] == [late[-1].due_at]


@pytest.mark.parametrize(("late_after", "missed"), [(timedelta(seconds=1), 2), (None, 0)])
def test_late_after_decides_what_a_resume_catches_up(
    store: Store, late_after: timedelta | None, missed: int
) -> None:
    """PAYSCHED_CATCHUP_LATE_AFTER: held 5 s, three occurrences due 2.5-4.5 s before the
    resume are late under 1 s ("latest" runs only the last), and on time under the default
    minute (all run)."""
    funded(store)
    # The same database, the setting's store (Store.connect(late_after=...) in App).
    tuned = store if late_after is None else Store(store.engine, late_after=late_after)
    pid = create(tuned, T0, cron="* * * * * *", catchup="latest")
    made = tuned.payments.materialize_due(T0, T0 + timedelta(seconds=3), [pid])
    assert [o.due_at for o in made] == [T0 + timedelta(seconds=s) for s in (1, 2, 3)]
    assert len(tuned.control.pause(pid, T0 + timedelta(milliseconds=500)).occurrences) == 3
    resumed = tuned.control.resume(pid, T0 + timedelta(seconds=5, milliseconds=500))
    assert [o.id for o in resumed.missed] == [o.id for o in made[:missed]]
    assert [o.id for o in resumed.occurrences] == [o.id for o in made[missed:]]
    states = {o.id: o.state for o in store.reads.occurrences_of(pid)}
    assert [states[o.id] for o in made] == [S.MISSED] * missed + [S.SCHEDULED] * (3 - missed)


def test_skip_next_skips_a_waiting_one_or_the_next_of_the_series(store: Store) -> None:
    funded(store)
    pid = create(store, T0, recurrence=rule("FREQ=WEEKLY;BYDAY=MO", "2027-01-11T09:00"))
    upcoming = store.control.upcoming(pid, 3)
    skipped = store.control.skip_next(pid, T0, "holiday trip")
    assert skipped.state == S.SKIPPED and skipped.due_at == upcoming[0].due
    assert [d.due for d in store.control.upcoming(pid, 2)] == [d.due for d in upcoming[1:3]]
    made = store.payments.materialize_due(T0, T0 + timedelta(days=8), [pid])
    assert made == []  # the skipped one is not created again
    made = store.payments.materialize_due(T0, T0 + timedelta(days=15), [pid])
    assert [o.due_at for o in made] == [upcoming[1].due]
    again = store.control.skip_next(pid, T0, "again")
    assert again.id == made[0].id and again.state == S.SKIPPED


def pending_one_time(store: Store) -> tuple[int, Occurrence, datetime]:
    """A one-time payment due in 5 minutes, its occurrence created (the payment is done)."""
    funded(store)
    due = T0 + timedelta(minutes=5)
    pid = store.payments.create_payment(
        payer="alice",
        payee="bob",
        amount=100,
        currency="EUR",
        due_at=due,
        cron=None,
        timezone=None,
        memo="",
        now=T0,
    ).id
    [occ] = store.payments.materialize_due(T0, due, [pid])
    assert store.payments.get_payment(pid).state == PaymentState.DONE
    return pid, occ, due


def test_a_pending_one_time_payment_can_be_paused_skipped_and_resumed(store: Store) -> None:
    """A one-time payment is done once its occurrence exists; until that starts, a person can
    still hold it or skip it, as they can cancel it. Resume makes it done again, not active."""
    pid, occ, due = pending_one_time(store)
    held = store.control.pause(pid, T0)
    assert held.payment.state == PaymentState.PAUSED
    assert [o.id for o in held.occurrences] == [occ.id]
    claimed = store.execution.claim(occ.id, due)
    assert isinstance(claimed, NoClaim) and claimed.why == "paused"
    resumed = store.control.resume(pid, T0 + timedelta(minutes=1))
    assert resumed.payment.state == PaymentState.DONE
    assert [o.id for o in resumed.occurrences] == [occ.id]
    # Once it has run there is nothing left to hold or skip.
    assert not isinstance(store.execution.claim(occ.id, due), NoClaim)
    with pytest.raises(Conflict, match="nothing of it is left to start"):
        store.control.pause(pid, due)
    with pytest.raises(Conflict, match="nothing is left to skip"):
        store.control.skip_next(pid, due, "too late")


def test_skip_next_of_a_pending_one_time_payment(store: Store) -> None:
    pid, occ, due = pending_one_time(store)
    skipped = store.control.skip_next(pid, T0, "not this time")
    assert skipped.id == occ.id and skipped.state == S.SKIPPED
    assert isinstance(store.execution.claim(occ.id, due), NoClaim)


def test_count_ends_the_series(store: Store) -> None:
    funded(store)
    pid = create(store, T0, recurrence=rule("FREQ=DAILY;COUNT=3", "2027-01-05T09:00"))
    made = store.payments.materialize_due(T0, T0 + timedelta(days=30), [pid])
    assert len(made) == 3
    assert store.payments.get_payment(pid).state == PaymentState.DONE
    # Created, not yet run: still upcoming; the series itself has nothing more.
    assert [d.due for d in store.control.upcoming(pid, 5)] == [o.due_at for o in made]


def test_the_scheduler_steps_a_sparse_series_within_the_budget(store: Store) -> None:
    """Materializing steps a series one date at a time, each searched within DATE_BUDGET:
    every 11th day that is a Monday Feb 29 falls in 2044, then in 2196, past a century of
    search, so the series ends with its 2044 date; a preview that would walk past what one
    request may is refused naming count (issue 19 finding 8)."""
    funded(store)
    pid = create(store, T0, recurrence=rule(SPARSE + ";INTERVAL=11", "2026-01-01T09:00", "UTC"))
    due = datetime(2044, 2, 29, 9, tzinfo=UTC)
    assert store.payments.get_payment(pid).next_due_at == due
    with walked() as months:
        [occ] = store.payments.materialize_due(due, due, [pid])
    assert occ.due_at == due and months[0] <= DATE_BUDGET + 1
    assert store.payments.get_payment(pid).state == PaymentState.DONE
    sparse = create(store, T0, recurrence=rule(SPARSE, "2026-01-01T09:00", "UTC"))
    with walked() as months, pytest.raises(InvalidInput, match="search budget") as refused:
        store.control.upcoming(sparse, 1000)
    assert refused.value.field == "count" and months[0] <= REQUEST_BUDGET + 1


async def test_the_app_and_the_quick_commands_use_the_configured_late_after(
    env: dict[str, str],
) -> None:
    from paysched.app import App
    from paysched.config import Settings
    from paysched.db.setup import open_store

    settings = Settings.from_env(env | {"PAYSCHED_CATCHUP_LATE_AFTER": "7s"})
    app = await App.open(settings)
    try:
        assert app.store.payments.late_after == timedelta(seconds=7)
    finally:
        await app.close()
    with open_store(settings, migrate=True) as store:
        assert store.payments.late_after == timedelta(seconds=7)
