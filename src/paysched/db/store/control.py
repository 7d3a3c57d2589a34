"""A person's control over a payment: cancel, pause, resume, skip (the next one, or the one
a reminder named), and what comes next (`upcoming`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    select,
    update,
)

from paysched import series
from paysched.clock import from_ms, to_ms
from paysched.db import tables as t
from paysched.db.store import transitions
from paysched.db.store.base import (
    AfterWrite,
    Database,
    after,
    existing_id,
    insert_ignore,
    retried_if_victim,
)
from paysched.db.store.payments import (
    CATCHABLE,
    LATE_AFTER,
    MissedOutbox,
    _seconds,
    catch_up,
    lock_payment,
    read_payment,
    set_payment_state,
)
from paysched.db.store.rows import occurrence_from
from paysched.domain import (
    FINAL_STATES,
    Occurrence,
    OccurrenceState,
    Payment,
    PaymentState,
    cancellable,
    may_have_reached_provider,
    never_claimed,
    occurrence_key,
)
from paysched.errors import Conflict
from paysched.recurrence import Due

S = OccurrenceState
__all__ = ["LATE_AFTER", "CancelResult", "Control", "Held", "NotSkippable"]


class NotSkippable(Conflict):
    """An occurrence a reminder named that cannot be skipped; `why`: skipped (already),
    ran (began or ended), missed, cancelled, done (nothing left) or gone (not the payment's
    next any more)."""

    def __init__(self, payment_id: int, why: str) -> None:
        super().__init__(f"payment {payment_id}: that occurrence cannot be skipped ({why})")
        self.why = why


def _why_not(state: OccurrenceState) -> str:
    if state in (OccurrenceState.SKIPPED, OccurrenceState.CANCELLED, OccurrenceState.MISSED):
        return state.value
    return "ran"


@dataclass(frozen=True, slots=True)
class CancelResult:
    payment: Payment
    cancelled: list[Occurrence]  # will never execute
    # Already executing, or its outcome is being resolved: money may be on its way, so these
    # finish (or are resolved) and are reported as such.
    in_flight: list[Occurrence]


@dataclass(frozen=True, slots=True)
class Held:
    """A pause or resume: the payment after it, and the occurrences it holds or releases."""

    payment: Payment
    occurrences: list[Occurrence]  # paused: held (their jobs to remove); resumed: to enqueue
    missed: list[Occurrence]  # resumed: marked missed by the catch-up policy


class Control:
    """Cancel, pause, resume and skip: a person's control over a payment's series.
    `late_after`: the catch-up a resume applies (as Payments's, see payments.LATE_AFTER)."""

    def __init__(self, db: Database, late_after: timedelta = LATE_AFTER) -> None:
        self.db = db
        self.late_after = late_after

    @retried_if_victim
    def cancel_payment(
        self, payment_id: int, now: datetime, reason: str, then: AfterWrite | None = None
    ) -> CancelResult:
        """Cancel the payment and every occurrence that has not started.

        A cancel that commits wins over everything not yet executing: the payment row is locked
        first (a materialize in progress finishes before, and its occurrences are cancelled
        here), and a claim reads the payment under a lock and refuses a cancelled one.
        Occurrences already executing or being resolved are left to finish and reported.
        """
        existing_id(payment_id, "payment")
        with self.db.engine.begin() as conn:
            state = lock_payment(conn, payment_id)
            if state == PaymentState.CANCELLED.value:
                raise Conflict(f"payment {payment_id} is already cancelled")
            rows = conn.execute(
                select(t.occurrences.c.id)
                .where(t.occurrences.c.payment_id == payment_id)
                .where(t.occurrences.c.state.not_in([s.value for s in FINAL_STATES]))
            ).all()
            # Read as not final, then locked: one a settle or finish held may have finished
            # while the cancel waited for it, and is then neither cancellable nor in flight.
            open_ = [
                o
                for o in transitions.lock(conn, [r.id for r in rows]).values()
                if o.state not in FINAL_STATES
            ]
            stoppable = [o for o in open_ if cancellable(o)]
            in_flight = [o for o in open_ if not cancellable(o)]
            if state == PaymentState.DONE.value and not stoppable:
                if in_flight:
                    raise Conflict(f"payment {payment_id} {in_flight_reason(in_flight[0])}")
                raise Conflict(f"payment {payment_id} has already run; nothing left to cancel")
            conn.execute(
                update(t.payments)
                .where(t.payments.c.id == payment_id)
                .values(state=PaymentState.CANCELLED.value, next_due_at=None, updated_at=now)
            )
            transitions.apply(
                conn,
                [
                    transitions.Change(
                        o, replace(o, state=S.CANCELLED, reason=reason, finished_at=now)
                    )
                    for o in stoppable
                ],
                now,
            )
            result = CancelResult(read_payment(conn, payment_id), stoppable, in_flight)
            after(then, conn, result)
            return result

    @retried_if_victim
    def pause(self, payment_id: int, now: datetime, then: AfterWrite | None = None) -> Held:
        """Nothing of the payment starts until it is resumed: no occurrence is created and
        none is claimed (its not-started occurrences are held as they are). Occurrences
        already executing finish."""
        existing_id(payment_id, "payment")
        with self.db.engine.begin() as conn:
            state = lock_payment(conn, payment_id)
            waiting = self._not_started(conn, payment_id)
            # A one-time payment is done once its occurrence exists, yet until that starts (or
            # while it waits to be retried) a person can still hold it, as they can cancel it.
            holdable = waiting or self._retrying(conn, payment_id)
            if not (
                state == PaymentState.ACTIVE.value
                or (state == PaymentState.DONE.value and holdable)
            ):
                detail = (
                    "nothing of it is left to start"
                    if state == PaymentState.DONE.value
                    else "not active"
                )
                raise Conflict(f"payment {payment_id} is {state}; {detail}")
            set_payment_state(conn, payment_id, PaymentState.PAUSED, now)
            result = Held(read_payment(conn, payment_id), waiting, [])
            after(then, conn, result)
            return result

    @retried_if_victim
    def resume(
        self,
        payment_id: int,
        now: datetime,
        missed_outbox: MissedOutbox | None = None,
        then: AfterWrite | None = None,
    ) -> Held:
        """Active again. What fell due while it was paused is run or marked missed by its
        catch-up policy (all / latest / none, and its window); the caller enqueues the rest
        and materializes what falls due next."""
        existing_id(payment_id, "payment")
        with self.db.engine.begin() as conn:
            state = lock_payment(conn, payment_id)
            if state != PaymentState.PAUSED.value:
                raise Conflict(f"payment {payment_id} is {state}, not paused")
            # Back to active while its series goes on; a one-time payment, or a series whose
            # last occurrence exists, is done again.
            ongoing = (
                conn.execute(
                    select(t.payments.c.next_due_at).where(t.payments.c.id == payment_id)
                ).scalar_one()
                is not None
            )
            target = PaymentState.ACTIVE if ongoing else PaymentState.DONE
            set_payment_state(conn, payment_id, target, now)
            payment = read_payment(conn, payment_id)
            policy = {payment_id: (payment.catchup, _seconds(payment.catchup_window))}
            missed = catch_up(conn, policy, now, self.late_after, missed_outbox)
            held = [o for o in self._not_started(conn, payment_id) if o.id not in missed]
            gone = [o for o in self._occurrences(conn, payment_id) if o.id in missed]
            result = Held(payment, held, gone)
            after(then, conn, result)
            return result

    @retried_if_victim
    def skip_next(
        self, payment_id: int, now: datetime, reason: str, then: AfterWrite | None = None
    ) -> Occurrence:
        """Skip the payment's next occurrence: the earliest not started, or the next of its
        series (created as skipped, so the series moves on past it)."""
        existing_id(payment_id, "payment")
        with self.db.engine.begin() as conn:
            state = lock_payment(conn, payment_id)
            # Not one queued again after an attempt: it has begun (see never_claimed).
            waiting = [o for o in self._not_started(conn, payment_id) if never_claimed(o)]
            if state == PaymentState.CANCELLED.value or (
                state == PaymentState.DONE.value and not waiting
            ):
                raise Conflict(f"payment {payment_id} is {state}; nothing is left to skip")
            if waiting:
                occ = waiting[0]
                skipped = replace(occ, state=S.SKIPPED, reason=reason, finished_at=now)
                transitions.apply(conn, [transitions.Change(occ, skipped)], now)
                after(then, conn, skipped)
                return skipped
            p = conn.execute(select(t.payments).where(t.payments.c.id == payment_id)).one()
            if p.next_due_at is None:
                raise Conflict(f"payment {payment_id} has no occurrence left to skip")
            occ = self._skip_unmade(conn, p, now, reason)
            after(then, conn, occ)
            return occ

    def _skip_unmade(self, conn: Connection, p: Any, now: datetime, reason: str) -> Occurrence:
        """The payment's next occurrence (not made yet), created as skipped; its series moves
        on past it. `p`: the payment's row, locked by the caller."""
        payment_id = p.id
        nominal = p.next_nominal_at or p.next_due_at
        created = conn.execute(
            insert_ignore(self.db.dialect, t.occurrences, None).returning(*t.occurrences.c),
            [
                dict(
                    payment_id=payment_id,
                    due_at=p.next_due_at,
                    key=occurrence_key(payment_id, to_ms(nominal)),
                    state=S.SKIPPED.value,
                    attempts=0,
                    fence=0,
                    reason=reason,
                    finished_at=now,
                    created_at=now,
                    updated_at=now,
                    nominal_at=p.next_nominal_at,
                )
            ],
        ).all()
        if not created:
            raise Conflict(f"payment {payment_id} changed meanwhile; try again")
        occ = occurrence_from(created[0])
        transitions.record(conn, [transitions.history(occ.id, now, None, S.SKIPPED, 0, reason)])
        step = series.following(p.cron, p.timezone, p.recurrence, nominal)
        conn.execute(
            update(t.payments)
            .where(t.payments.c.id == payment_id)
            .values(
                next_due_at=None if step is None else step.due,
                next_nominal_at=None if step is None or step.nominal == step.due else step.nominal,
                state=PaymentState.DONE.value if step is None else p.state,
                updated_at=now,
            )
        )
        return occ

    @retried_if_victim
    def skip_occurrence(
        self,
        payment_id: int,
        due_at: datetime,
        now: datetime,
        reason: str,
        then: AfterWrite | None = None,
    ) -> Occurrence:
        """Skip the payment's occurrence due at `due_at` (the one a reminder named), and only
        that one: made and not started, it is skipped; not made yet and the payment's next,
        it is created as skipped and the series moves on past it. NotSkippable (nothing
        written) when it already was skipped, ran or began, was missed or cancelled, or is
        none of the payment's any more."""
        existing_id(payment_id, "payment")
        with self.db.engine.begin() as conn:
            state = lock_payment(conn, payment_id)
            c = t.occurrences.c
            # To the millisecond, as a reminder names it (`--in 30s` gives microseconds).
            start = from_ms(to_ms(due_at))
            within = and_(c.due_at >= start, c.due_at < start + timedelta(milliseconds=1))
            query = select(c.id).where(c.payment_id == payment_id, within).order_by(c.id)
            ids = conn.execute(query).scalars().all()
            made = sorted(transitions.lock(conn, ids).values(), key=lambda o: o.id)
            if made:
                # Two nominal dates moved onto one day share a due time: the first not
                # started is the one, else the first tells what became of them.
                waiting = [
                    o for o in made if o.state in (S.SCHEDULED, S.QUEUED) and never_claimed(o)
                ]
                if not waiting:
                    raise NotSkippable(payment_id, _why_not(made[0].state))
                occ = waiting[0]
                skipped = replace(occ, state=S.SKIPPED, reason=reason, finished_at=now)
                transitions.apply(conn, [transitions.Change(occ, skipped)], now)
                after(then, conn, skipped)
                return skipped
            if state == PaymentState.CANCELLED.value:
                raise NotSkippable(payment_id, "cancelled")
            p = conn.execute(select(t.payments).where(t.payments.c.id == payment_id)).one()
            if p.next_due_at is None or to_ms(p.next_due_at) != to_ms(due_at):
                # The series is past it, or never had it.
                raise NotSkippable(payment_id, "done" if p.next_due_at is None else "gone")
            occ = self._skip_unmade(conn, p, now, reason)
            after(then, conn, occ)
            return occ

    def upcoming(self, payment_id: int, count: int) -> list[Due]:
        """The payment's next `count` due times: the occurrences not started yet, then its
        series onwards (none for a cancelled or finished payment)."""
        existing_id(payment_id, "payment")
        with self.db.reading() as conn:
            payment = read_payment(conn, payment_id)
            waiting = self._not_started(conn, payment_id)
        out = [Due(nominal=o.nominal_at or o.due_at, due=o.due_at) for o in waiting][:count]
        if payment.state in (PaymentState.CANCELLED, PaymentState.DONE) or not (
            payment.next_due_at
        ):
            return out
        nominal = payment.next_nominal_at or payment.next_due_at
        out.append(Due(nominal=nominal, due=payment.next_due_at))
        out += series.upcoming(
            payment.cron, payment.timezone, payment.recurrence, nominal, count - len(out)
        )
        return out[:count]

    def _not_started(self, conn: Connection, payment_id: int) -> list[Occurrence]:
        rows = conn.execute(
            select(t.occurrences.c.id)
            .where(t.occurrences.c.payment_id == payment_id)
            .where(t.occurrences.c.state.in_(CATCHABLE))
            .order_by(t.occurrences.c.due_at, t.occurrences.c.id)
        ).all()
        locked = transitions.lock(conn, [r.id for r in rows])
        return sorted(
            (o for o in locked.values() if o.state.value in CATCHABLE),
            key=lambda o: (o.due_at, o.id),
        )

    def _retrying(self, conn: Connection, payment_id: int) -> bool:
        """Has the payment an occurrence waiting for its next attempt? (Its claim is held
        while the payment is paused.)"""
        c = t.occurrences.c
        query = select(c.id).where(c.payment_id == payment_id, c.state == S.RETRYING.value)
        return conn.execute(query.limit(1)).first() is not None

    def _occurrences(self, conn: Connection, payment_id: int) -> list[Occurrence]:
        rows = conn.execute(select(t.occurrences).where(t.occurrences.c.payment_id == payment_id))
        return [occurrence_from(r) for r in rows]


def in_flight_reason(occ: Occurrence) -> str:
    """Why a cancel leaves this occurrence alone, said after 'payment N'."""
    if occ.state == S.UNKNOWN or may_have_reached_provider(occ):
        return (
            "is executing: asking the provider first whether it went through; it cannot be "
            "cancelled now"
        )
    if occ.state == S.NEEDS_REVIEW:
        return "needs review: a person decides what became of it (paysched resolve)"
    return f"is {occ.state.value} now and cannot be cancelled; it will finish"
