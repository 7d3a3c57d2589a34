"""Read models: occurrences, their history and counts, for views, reconcile and checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, or_, select

from paysched.db import tables as t
from paysched.db.store.base import StoreBase, existing_id
from paysched.db.store.rows import occurrence_from, payment_from, payment_select
from paysched.domain import (
    FINAL_STATES,
    PENDING_STATES,
    Notification,
    Occurrence,
    OccurrenceState,
    Payment,
    PaymentState,
    Transition,
)
from paysched.errors import NotFound

S = OccurrenceState


@dataclass(frozen=True, slots=True)
class PaymentHistory:
    """What a payment's detail view shows, read at one instant."""

    payment: Payment
    # Every occurrence oldest first (by due time, then id) when read unpaged; else one page,
    # newest first, with `more` saying whether older ones follow.
    occurrences: list[Occurrence]
    transitions: dict[int, list[Transition]]  # by occurrence id, oldest first
    notifications: list[Notification]  # newest first
    more: bool
    # What views.payment_status needs of ALL the occurrences, whichever of them were read:
    # the state of the last one by due time, and whether any is not final yet.
    last_state: OccurrenceState | None
    unfinished: bool


@dataclass(frozen=True, slots=True)
class OccurrencePage:
    """A page of a payment's occurrences, newest first, with their transitions."""

    occurrences: list[Occurrence]  # up to the limit (ask one more to learn if more follow)
    transitions: dict[int, list[Transition]]  # by occurrence id, oldest first


class ReadsStore(StoreBase):
    def payment_history(
        self, payment_id: int, *, page: int | None = None,
        before: tuple[datetime, int] | None = None, notifications: int = 1000,
    ) -> PaymentHistory:  # fmt: skip
        """A payment, its occurrences, their transitions and its latest notifications on ONE
        connection in one read transaction: a detail read was four checkouts (each a pool
        ping, BEGIN and ROLLBACK around its query), most of GET /v1/payments/{id}'s time.

        `page` bounds the occurrences read: the newest `page` due before `before` (a
        (due_at, id) position), so that the read costs the same few statements and rows for a
        payment with a year of history as for a new one. Unpaged (`page` None, for `paysched
        show`) reads them all, oldest first."""
        # Imported here: db.outbox imports the store package.
        from paysched.db.outbox import notification_from

        existing_id(payment_id, "payment")
        n = t.notifications.c
        with self._reading() as conn:
            row = conn.execute(payment_select().where(t.payments.c.id == payment_id)).first()
            if row is None:
                raise NotFound(f"no payment with id {payment_id}")
            payment = payment_from(row)
            if page is None:
                occurrences = self._occurrences_of(conn, payment_id)
                more = False
                last = occurrences[-1].state if occurrences else None
                unfinished = any(o.state not in FINAL_STATES for o in occurrences)
            else:
                rows = self._page_of(conn, payment_id, page + 1, before)
                more, occurrences = len(rows) > page, rows[:page]
                last, unfinished = self._status_of(conn, payment, rows if before is None else None)
            transitions = self._histories(conn, occurrences)
            sent = conn.execute(
                select(t.notifications).where(n.payment_id == payment_id)
                .order_by(n.id.desc()).limit(notifications)
            )  # fmt: skip
            return PaymentHistory(payment, occurrences, transitions,
                                  [notification_from(r) for r in sent], more, last,
                                  unfinished)  # fmt: skip

    def payment_occurrences(
        self, payment_id: int, limit: int, before: tuple[datetime, int] | None = None
    ) -> OccurrencePage:
        """Up to `limit` of the payment's occurrences due before `before` (a (due_at, id)
        position; None from the newest), newest first, with their transitions: three
        statements on one connection however long its history. NotFound if no payment."""
        existing_id(payment_id, "payment")
        with self._reading() as conn:
            found = conn.execute(
                select(t.payments.c.id).where(t.payments.c.id == payment_id)
            ).first()
            if found is None:
                raise NotFound(f"no payment with id {payment_id}")
            rows = self._page_of(conn, payment_id, limit, before)
            return OccurrencePage(rows, self._histories(conn, rows))

    def _page_of(
        self, conn: Connection, payment_id: int, limit: int, before: tuple[datetime, int] | None
    ) -> list[Occurrence]:
        # Keyset on (due_at, id), newest first: one range scan of the (payment_id, due_at)
        # index however deep the page.
        c = t.occurrences.c
        query = (
            select(t.occurrences).where(c.payment_id == payment_id)
            .order_by(c.due_at.desc(), c.id.desc()).limit(limit)
        )  # fmt: skip
        if before is not None:
            query = query.where(
                or_(c.due_at < before[0], and_(c.due_at == before[0], c.id < before[1]))
            )
        return [occurrence_from(r) for r in conn.execute(query)]

    def _status_of(
        self, conn: Connection, payment: Payment, newest: list[Occurrence] | None
    ) -> tuple[OccurrenceState | None, bool]:
        """(last state, any not final) of all the payment's occurrences, in at most two short
        statements; `newest` is the first page when it was read (its head is the last one).
        Only a done payment's status depends on them (views.payment_status)."""
        if payment.state != PaymentState.DONE:
            return None, False
        c = t.occurrences.c
        if newest is None:
            newest = self._page_of(conn, payment.id, 1, None)
        # The states that are not final, listed, rather than NOT IN the final ones: a list the
        # (state, due_at) index can look up (its non-final part stays small), which NOT IN is
        # not; else the payment's whole history is walked when all of it is final.
        unfinished = conn.execute(
            select(c.id).where(c.payment_id == payment.id)
            .where(c.state.in_([s.value for s in S if s not in FINAL_STATES])).limit(1)
        ).first() is not None  # fmt: skip
        return (newest[0].state if newest else None), unfinished

    def _histories(
        self, conn: Connection, occurrences: Sequence[Occurrence]
    ) -> dict[int, list[Transition]]:
        transitions: dict[int, list[Transition]] = {o.id: [] for o in occurrences}
        for tr in self._transitions_of(conn, list(transitions)):
            transitions[tr.occurrence_id].append(tr)
        return transitions

    def get_occurrence(self, occurrence_id: int) -> Occurrence:
        existing_id(occurrence_id, "occurrence")
        with self._reading() as conn:
            row = conn.execute(
                select(t.occurrences).where(t.occurrences.c.id == occurrence_id)
            ).first()
        if row is None:
            raise NotFound(f"no occurrence with id {occurrence_id}")
        return occurrence_from(row)

    def find_occurrence(self, key: str) -> Occurrence:
        with self._reading() as conn:
            row = conn.execute(select(t.occurrences).where(t.occurrences.c.key == key)).first()
        if row is None:
            raise NotFound(f"no occurrence with key {key!r}")
        return occurrence_from(row)

    def occurrences_of(self, payment_id: int) -> list[Occurrence]:
        with self._reading() as conn:
            return self._occurrences_of(conn, payment_id)

    def _occurrences_of(self, conn: Connection, payment_id: int) -> list[Occurrence]:
        rows = conn.execute(
            select(t.occurrences)
            .where(t.occurrences.c.payment_id == payment_id)
            .order_by(t.occurrences.c.due_at, t.occurrences.c.id)
        )
        return [occurrence_from(r) for r in rows]

    def occurrence_states(self, payment_ids: Sequence[int]) -> dict[int, list[OccurrenceState]]:
        """The states of each payment's occurrences, by due time: what a list of payments
        needs to say what became of each (views.payment_status), in one query."""
        out: dict[int, list[OccurrenceState]] = {pid: [] for pid in payment_ids}
        if not payment_ids:
            return out
        with self._reading() as conn:
            rows = conn.execute(
                select(t.occurrences.c.payment_id, t.occurrences.c.state)
                .where(t.occurrences.c.payment_id.in_(list(payment_ids)))
                .order_by(t.occurrences.c.due_at, t.occurrences.c.id)
            )
            for row in rows:
                out[row.payment_id].append(S(row.state))
        return out

    def transitions_of(self, occurrence_ids: Sequence[int]) -> list[Transition]:
        with self._reading() as conn:
            return self._transitions_of(conn, occurrence_ids)

    def _transitions_of(self, conn: Connection, occurrence_ids: Sequence[int]) -> list[Transition]:
        if not occurrence_ids:
            return []
        rows = conn.execute(
            select(t.transitions)
            .where(t.transitions.c.occurrence_id.in_(list(occurrence_ids)))
            .order_by(t.transitions.c.id)
        )
        return [
            Transition(
                occurrence_id=r.occurrence_id, at=r.at,
                from_state=S(r.from_state) if r.from_state else None,
                to_state=S(r.to_state), attempt=r.attempt, reason=r.reason,
            )
            for r in rows
        ]  # fmt: skip

    def list_occurrences(
        self, limit: int, *, after: tuple[datetime, int] | None = None,
        state: OccurrenceState | None = None, payment_id: int | None = None,
        due_from: datetime | None = None, due_before: datetime | None = None,
    ) -> list[Occurrence]:  # fmt: skip
        """Earliest due first (then by id); `after` is the (due_at, id) a page ended at."""
        c = t.occurrences.c
        query = select(t.occurrences).order_by(c.due_at, c.id).limit(limit)
        if after is not None:
            query = query.where(
                or_(c.due_at > after[0], and_(c.due_at == after[0], c.id > after[1]))
            )
        if state is not None:
            query = query.where(c.state == state.value)
        if payment_id is not None:
            query = query.where(c.payment_id == payment_id)
        if due_from is not None:
            query = query.where(c.due_at >= due_from)
        if due_before is not None:
            query = query.where(c.due_at < due_before)
        with self._reading() as conn:
            return [occurrence_from(r) for r in conn.execute(query)]

    def oldest_due(self, now: datetime) -> datetime | None:
        """The due time of the oldest occurrence that is due and still waits to run."""
        c = t.occurrences.c
        with self._reading() as conn:
            oldest: datetime | None = conn.execute(
                select(func.min(c.due_at))
                .where(c.state.in_([s.value for s in PENDING_STATES]))
                .where(c.due_at <= now)
            ).scalar_one_or_none()
        return oldest

    def occurrence_counts(self) -> dict[str, int]:
        with self._reading() as conn:
            rows = conn.execute(
                select(t.occurrences.c.state, func.count()).group_by(t.occurrences.c.state)
            )
            counts = {s.value: 0 for s in OccurrenceState}
            counts.update({state: int(n) for state, n in rows})
            return counts

    def all_occurrences(self, payment_ids: Sequence[int] | None = None) -> list[Occurrence]:
        query = select(t.occurrences).order_by(t.occurrences.c.due_at)
        if payment_ids is not None:
            query = query.where(t.occurrences.c.payment_id.in_(list(payment_ids)))
        with self._reading() as conn:
            return [occurrence_from(r) for r in conn.execute(query)]

    def pending_occurrences(self, horizon: datetime, limit: int = 10_000) -> list[Occurrence]:
        """Occurrences the queue owns (not final, not unresolved) due by `horizon`, earliest
        first: reconcile's input."""
        # A paused payment's occurrences wait for its resume, not in the queue. NOT EXISTS
        # (an anti-join on the payment's key), not NOT IN: PostgreSQL cannot turn NOT IN into
        # an anti-join, so it read every payment on every tick to hash the paused ones.
        paused = (
            select(t.payments.c.id)
            .where(t.payments.c.id == t.occurrences.c.payment_id)
            .where(t.payments.c.state == PaymentState.PAUSED.value)
        )
        query = (
            select(t.occurrences)
            .where(t.occurrences.c.state.in_([s.value for s in PENDING_STATES]))
            .where(t.occurrences.c.due_at <= horizon)
            .where(~paused.exists())
            .order_by(t.occurrences.c.due_at)
            .limit(limit)
        )
        with self._reading() as conn:
            return [occurrence_from(r) for r in conn.execute(query)]

    def entered_at(self, occurrence_id: int, state: OccurrenceState) -> datetime | None:
        """When the occurrence last entered `state`, from its history."""
        tr = t.transitions.c
        with self._reading() as conn:
            at: datetime | None = conn.execute(
                select(tr.at)
                .where(tr.occurrence_id == occurrence_id)
                .where(tr.to_state == state.value)
                .order_by(tr.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return at
