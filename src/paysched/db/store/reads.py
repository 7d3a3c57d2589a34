"""Read models: occurrences, their history and counts, for views, reconcile and checks."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    true,
)

from paysched.db import tables as t
from paysched.db.store.base import Database, existing_id
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

if TYPE_CHECKING:
    from paysched.db.actions import Action

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
    # What people did to it (db.actions), newest first: as many as occurrences are read
    # (and one more, to tell that older ones follow), all of them unpaged.
    actions: Sequence[Action] = ()


@dataclass(frozen=True, slots=True)
class Attention:
    """An occurrence a list of payments flags: late (not started, past due), unknown (with
    the resolver's next lookup) or needs_review."""

    state: OccurrenceState
    due_at: datetime
    resolve_at: datetime | None


@dataclass(frozen=True, slots=True)
class Activity:
    """An occurrence that started or finished lately: what the dashboard's chart draws."""

    due_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    state: OccurrenceState


# The states an occurrence may be in once it started (cancelled, skipped, missed never did).
_STARTED = (S.EXECUTING, S.RETRYING, S.SUCCEEDED, S.FAILED, S.UNKNOWN, S.NEEDS_REVIEW)
ACTIVITY_SLACK = timedelta(hours=1)
ACTIVITY_LIMIT = 50_000


@dataclass(frozen=True, slots=True)
class OccurrencePage:
    """A page of a payment's occurrences, newest first, with their transitions."""

    occurrences: list[Occurrence]  # up to the limit (ask one more to learn if more follow)
    transitions: dict[int, list[Transition]]  # by occurrence id, oldest first


# The states that are not final, listed, rather than NOT IN the final ones: a list the
# (state, due_at) index can look up (its non-final part stays small), which NOT IN is not;
# else the payment's whole history is walked when all of it is final.
_UNFINISHED = [s.value for s in S if s not in FINAL_STATES]


@functools.cache
def _detail_head(limit: int) -> Any:
    """A payment (columns p_*), its newest `limit` occurrences (o_*) with their transitions
    (tr_*), newest occurrence first and each one's transitions oldest first, and whether any
    of its occurrences is unfinished: ONE statement, built once (building a statement and its
    cache key cost more CPU than running it). A payment with no occurrences is one row with
    o_* and tr_* NULL; no payment, no row."""
    p, o, tr = t.payments, t.occurrences, t.transitions
    page = (
        select(o)
        .where(o.c.payment_id == bindparam("pid"))
        .order_by(o.c.due_at.desc(), o.c.id.desc())
        .limit(limit)
    ).subquery("page")
    payer = t.accounts.alias("payer")
    payee = t.accounts.alias("payee")
    # Literal states (our own constants): an expanding IN was rendered again at every call.
    states: list[Any] = [literal_column(f"'{state}'") for state in _UNFINISHED]
    unfinished = exists(select(o.c.id).where(o.c.payment_id == p.c.id).where(o.c.state.in_(states)))
    return (
        select(
            *(c.label(f"p_{c.name}") for c in p.c),
            payer.c.name.label("p_payer_name"),
            payee.c.name.label("p_payee_name"),
            unfinished.label("unfinished"),
            *(c.label(f"o_{c.name}") for c in page.c),
            *(c.label(f"tr_{c.name}") for c in tr.c),
        )
        .select_from(
            p.join(payer, payer.c.id == p.c.payer_id)
            .join(payee, payee.c.id == p.c.payee_id)
            .outerjoin(page, true())
            .outerjoin(tr, tr.c.occurrence_id == page.c.id)
        )
        .where(p.c.id == bindparam("pid"))
        .order_by(page.c.due_at.desc(), page.c.id.desc(), tr.c.id)
    )


def _occurrence_at(m: RowMapping) -> Occurrence:
    return Occurrence(
        id=m["o_id"],
        payment_id=m["o_payment_id"],
        key=m["o_key"],
        due_at=m["o_due_at"],
        state=S(m["o_state"]),
        attempts=m["o_attempts"],
        fence=m["o_fence"],
        reason=m["o_reason"],
        started_at=m["o_started_at"],
        finished_at=m["o_finished_at"],
        takeovers=m["o_takeovers"],
        reference=m["o_reference"],
        resolve_at=m["o_resolve_at"],
        resolve_checks=m["o_resolve_checks"],
        nominal_at=m["o_nominal_at"],
        approval_deadline=m.get("o_approval_deadline"),
    )


def _transition_at(m: RowMapping) -> Transition:
    return Transition(
        occurrence_id=m["tr_occurrence_id"],
        at=m["tr_at"],
        from_state=S(m["tr_from_state"]) if m["tr_from_state"] else None,
        to_state=S(m["tr_to_state"]),
        attempt=m["tr_attempt"],
        reason=m["tr_reason"],
    )


@functools.cache
def _notifications_of(limit: int) -> Any:
    n = t.notifications.c
    return (
        select(t.notifications)
        .where(n.payment_id == bindparam("pid"))
        .order_by(n.id.desc())
        .limit(limit)
    )


class Reads:
    """Read models: occurrences, their history and counts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def payment_history(
        self,
        payment_id: int,
        *,
        page: int | None = None,
        before: tuple[datetime, int] | None = None,
        notifications: int = 1000,
    ) -> PaymentHistory:
        """A payment, its occurrences, their transitions and its latest notifications on ONE
        connection in one read transaction: a detail read was four checkouts (each a pool
        ping, BEGIN and ROLLBACK around its query), most of GET /v1/payments/{id}'s time.

        `page` bounds the occurrences read: the newest `page` due before `before` (a
        (due_at, id) position), so that the read costs the same few statements and rows for a
        payment with a year of history as for a new one. Unpaged (`page` None, for `paysched
        show`) reads them all, oldest first."""
        # Imported here: db.outbox and db.actions import the store package.
        from paysched.db.actions import read_actions
        from paysched.db.outbox import notification_from

        existing_id(payment_id, "payment")
        n = t.notifications.c
        if page is not None and before is None:  # the detail's first page: the hot path
            return self._detail(payment_id, page, notifications)
        with self.db.reading() as conn:
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
                select(t.notifications)
                .where(n.payment_id == payment_id)
                .order_by(n.id.desc())
                .limit(notifications)
            )
            notes = [notification_from(r) for r in sent]
            actions = read_actions(conn, payment_id, None if page is None else page + 1)
            return PaymentHistory(
                payment, occurrences, transitions, notes, more, last, unfinished, actions
            )

    def _detail(self, payment_id: int, page: int, notifications: int) -> PaymentHistory:
        """payment_history's first page in two statements (it was five): the payment with
        its newest occurrences, their transitions and its status (_detail_head), then its
        notifications."""
        from paysched.db.actions import read_actions  # both import the store
        from paysched.db.outbox import notification_from

        with self.db.reading() as conn:
            rows = conn.execute(_detail_head(page + 1), {"pid": payment_id}).all()
            if not rows:
                raise NotFound(f"no payment with id {payment_id}")
            sent = conn.execute(_notifications_of(notifications), {"pid": payment_id}).all()
            actions = read_actions(conn, payment_id, page + 1)
        payment = payment_from(rows[0], "p_")
        occurrences: list[Occurrence] = []
        transitions: dict[int, list[Transition]] = {}
        for row in rows:
            m = row._mapping
            if m["o_id"] is None:
                continue
            if m["o_id"] not in transitions:
                transitions[m["o_id"]] = []
                occurrences.append(_occurrence_at(m))
            if m["tr_id"] is not None:
                transitions[m["o_id"]].append(_transition_at(m))
        more, shown = len(occurrences) > page, occurrences[:page]
        for extra in occurrences[page:]:
            del transitions[extra.id]
        done = payment.state == PaymentState.DONE
        # Only a done payment's status depends on its occurrences (views.payment_status).
        last = occurrences[0].state if done and occurrences else None
        unfinished = done and bool(rows[0]._mapping["unfinished"])
        return PaymentHistory(
            payment,
            shown,
            transitions,
            [notification_from(r) for r in sent],
            more,
            last,
            unfinished,
            actions,
        )

    def payment_occurrences(
        self, payment_id: int, limit: int, before: tuple[datetime, int] | None = None
    ) -> OccurrencePage:
        """Up to `limit` of the payment's occurrences due before `before` (a (due_at, id)
        position; None from the newest), newest first, with their transitions: three
        statements on one connection however long its history. NotFound if no payment."""
        existing_id(payment_id, "payment")
        with self.db.reading() as conn:
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
            select(t.occurrences)
            .where(c.payment_id == payment_id)
            .order_by(c.due_at.desc(), c.id.desc())
            .limit(limit)
        )
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
        unfinished = (
            conn.execute(
                select(c.id)
                .where(c.payment_id == payment.id)
                .where(c.state.in_([s.value for s in S if s not in FINAL_STATES]))
                .limit(1)
            ).first()
            is not None
        )
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
        with self.db.reading() as conn:
            row = conn.execute(
                select(t.occurrences).where(t.occurrences.c.id == occurrence_id)
            ).first()
        if row is None:
            raise NotFound(f"no occurrence with id {occurrence_id}")
        return occurrence_from(row)

    def find_occurrence(self, key: str) -> Occurrence:
        with self.db.reading() as conn:
            row = conn.execute(select(t.occurrences).where(t.occurrences.c.key == key)).first()
        if row is None:
            raise NotFound(f"no occurrence with key {key!r}")
        return occurrence_from(row)

    def occurrences_of(self, payment_id: int) -> list[Occurrence]:
        with self.db.reading() as conn:
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
        with self.db.reading() as conn:
            rows = conn.execute(
                select(t.occurrences.c.payment_id, t.occurrences.c.state)
                .where(t.occurrences.c.payment_id.in_(list(payment_ids)))
                .order_by(t.occurrences.c.due_at, t.occurrences.c.id)
            )
            for row in rows:
                out[row.payment_id].append(S(row.state))
        return out

    def needing_attention(
        self, payment_ids: Sequence[int], late_before: datetime
    ) -> dict[int, list[Attention]]:
        """Each payment's occurrences a person should hear of, by due time: unknown and
        needs_review ones, and the late: scheduled or queued, never started, due before
        `late_before`. One query; only unfinished rows, which stay few (the (state, due_at)
        and (payment_id, due_at) indexes find them), never a payment's finished history."""
        out: dict[int, list[Attention]] = {pid: [] for pid in payment_ids}
        if not payment_ids:
            return out
        c = t.occurrences.c
        unresolved = c.state.in_([S.UNKNOWN.value, S.NEEDS_REVIEW.value])
        late = and_(
            c.state.in_([S.SCHEDULED.value, S.QUEUED.value]),
            c.started_at.is_(None),
            c.due_at < late_before,
        )
        query = (
            select(c.payment_id, c.state, c.due_at, c.resolve_at)
            .where(c.payment_id.in_(list(payment_ids)))
            .where(or_(unresolved, late))
            .order_by(c.due_at, c.id)
        )
        with self.db.reading() as conn:
            for row in conn.execute(query):
                out[row.payment_id].append(Attention(S(row.state), row.due_at, row.resolve_at))
        return out

    def recent_activity(
        self, since: datetime, slack: timedelta = ACTIVITY_SLACK, limit: int = ACTIVITY_LIMIT
    ) -> list[Activity]:
        """Occurrences that started or finished at or after `since` (the dashboard's chart of
        the last hour), at most `limit`, oldest due first.

        One read of the (state, due_at) index: the states an occurrence has once started,
        due from `slack` before `since` on (the table has no index on started_at or
        finished_at, and one due long before it started is already on the overview as the
        oldest due). `limit` bounds a very busy hour's read: the newest are then missing."""
        c = t.occurrences.c
        query = (
            select(c.due_at, c.started_at, c.finished_at, c.state)
            .where(c.state.in_([s.value for s in _STARTED]))
            .where(c.due_at >= since - slack)
            .where(or_(c.started_at >= since, c.finished_at >= since))
            .order_by(c.due_at)
            .limit(limit)
        )
        with self.db.reading() as conn:
            return [
                Activity(r.due_at, r.started_at, r.finished_at, S(r.state))
                for r in conn.execute(query)
            ]

    def transitions_of(self, occurrence_ids: Sequence[int]) -> list[Transition]:
        with self.db.reading() as conn:
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
                occurrence_id=r.occurrence_id,
                at=r.at,
                from_state=S(r.from_state) if r.from_state else None,
                to_state=S(r.to_state),
                attempt=r.attempt,
                reason=r.reason,
            )
            for r in rows
        ]

    def list_occurrences(
        self,
        limit: int,
        *,
        after: tuple[datetime, int] | None = None,
        state: OccurrenceState | None = None,
        payment_id: int | None = None,
        due_from: datetime | None = None,
        due_before: datetime | None = None,
    ) -> list[Occurrence]:
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
        with self.db.reading() as conn:
            return [occurrence_from(r) for r in conn.execute(query)]

    def oldest_due(self, now: datetime) -> datetime | None:
        """The due time of the oldest occurrence that is due and still waits to run."""
        c = t.occurrences.c
        with self.db.reading() as conn:
            oldest: datetime | None = conn.execute(
                select(func.min(c.due_at))
                .where(c.state.in_([s.value for s in PENDING_STATES]))
                .where(c.due_at <= now)
            ).scalar_one_or_none()
        return oldest

    def occurrence_counts(self) -> dict[str, int]:
        with self.db.reading() as conn:
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
        with self.db.reading() as conn:
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
        with self.db.reading() as conn:
            return [occurrence_from(r) for r in conn.execute(query)]

    def entered_at(self, occurrence_id: int, state: OccurrenceState) -> datetime | None:
        """When the occurrence last entered `state`, from its history."""
        tr = t.transitions.c
        with self.db.reading() as conn:
            at: datetime | None = conn.execute(
                select(tr.at)
                .where(tr.occurrence_id == occurrence_id)
                .where(tr.to_state == state.value)
                .order_by(tr.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return at
