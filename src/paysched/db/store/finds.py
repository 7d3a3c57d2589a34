"""Finding payments: search and filters for GET /v1/payments and the dashboard's list, and an
account's ledger.

Every query here reads by index, newest first (keyset on the payment id):

- exact filters (a payment id, an occurrence key, a provider reference, an account, a payment
  state, a currency) each have an index that leads to the page's rows directly;
- filters no index can answer (memo text, the status, an occurrence state that is final, a due
  range) are checked on the payments of one STRETCH of ids at a time, newest first. A page
  then holds what matched in the stretch, and its cursor continues below it (even when the page
  is short or empty), so a request costs at most a stretch of index reads however rare the
  match: a search for a memo nobody wrote never reads the whole history at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, exists, false, func, or_, select

from paysched.db import tables as t
from paysched.db.store.base import Database
from paysched.db.store.rows import payment_from, payment_select
from paysched.domain import FINAL_STATES, MAX_ID, OccurrenceState, Payment, PaymentState

S = OccurrenceState
# Payment ids checked per request by a filter no index answers (see the module's docstring).
STRETCH = 5_000
# What a payment's status (views.status_of) may be.
STATUSES = (
    "scheduled",
    "pending",
    "paused",
    "cancelled",
    "succeeded",
    "failed",
    "missed",
    "skipped",
)
# The occurrence states whose rows stay few (the (state, due_at) index finds them all at once);
# the final ones are history and grow forever.
_UNFINISHED = tuple(s.value for s in S if s not in FINAL_STATES)


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """What GET /v1/payments and the dashboard's list take, checked (see
    paysched.finding.payment_filter)."""

    payment_id: int | None = None  # q: "123" or "#123"
    text: str | None = None  # q as anything else: an occurrence key, a reference, an account
    #                          name or memo text (the first that names something)
    state: str | None = None  # the payment's state
    status: str | None = None  # what became of it (views.status_of)
    occurrence: str | None = None  # has an occurrence in this state
    account: str | None = None  # payer or payee
    payer: str | None = None
    payee: str | None = None
    currency: str | None = None
    due_from: datetime | None = None  # has an occurrence due at or after
    due_before: datetime | None = None  # ... and before

    def stretched(self) -> bool:
        """Whether a filter no index answers is set (the search goes a stretch at a time)."""
        final_occurrence = self.occurrence is not None and self.occurrence not in _UNFINISHED
        return (
            self.status is not None
            or final_occurrence
            or self.due_from is not None
            or self.due_before is not None
        )


@dataclass(frozen=True, slots=True)
class FoundPayments:
    """A page of payments, newest first. `older` is the `before` of the next page (None:
    nothing older), `newer` the `after` of the one before it (None: this is the newest);
    `matched` says what the search text was taken for ("id", "occurrence key", "reference",
    "account", "memo"; None without one); `searched_down_to` is the lowest payment id a
    stretched search looked at (None if it was not stretched)."""

    payments: list[Payment]
    older: int | None
    newer: int | None
    matched: str | None
    searched_down_to: int | None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    amount: int  # signed minor units
    transfer_id: str
    occurrence_id: int | None
    payment_id: int | None
    created_at: datetime


def _status_is(status: str) -> ColumnElement[bool]:
    """views.status_of as SQL over one payment row: its last occurrence (by due time, then
    id) and whether any is unfinished, each one probe of the (payment_id, due_at) index."""
    p, o = t.payments.c, t.occurrences.c
    if status in ("paused", "cancelled") or status == "scheduled":
        own = p.state == (PaymentState.ACTIVE.value if status == "scheduled" else status)
    else:
        own = false()
    done = p.state == PaymentState.DONE.value
    of_it = o.payment_id == p.id
    unfinished = exists(select(o.id).where(of_it).where(o.state.in_(_UNFINISHED)))
    last = (
        select(o.state).where(of_it).order_by(o.due_at.desc(), o.id.desc()).limit(1)
    ).scalar_subquery()
    if status == "scheduled":  # active, or done with no occurrence yet
        return or_(own, and_(done, ~exists(select(o.id).where(of_it))))
    if status == "pending":
        return and_(done, unfinished)
    if status == "paused":
        return own
    # A final outcome (cancelled also when every occurrence was cancelled one by one).
    return or_(own, and_(done, ~unfinished, last == status))


def _has_occurrence(f: PaymentFilter) -> ColumnElement[bool] | None:
    """An occurrence of the payment in `f.occurrence`'s state (when final: the unfinished ones
    are looked up by state instead) and/or due in f's range: a probe of the payment's own
    (payment_id, due_at) index."""
    final = f.occurrence is not None and f.occurrence not in _UNFINISHED
    if not final and f.due_from is None and f.due_before is None:
        return None
    o = t.occurrences.c
    query = select(o.id).where(o.payment_id == t.payments.c.id)
    if final:
        query = query.where(o.state == f.occurrence)
    if f.due_from is not None:
        query = query.where(o.due_at >= f.due_from)
    if f.due_before is not None:
        query = query.where(o.due_at < f.due_before)
    return exists(query)


class Finds:
    """Search and filters of payments, an account's ledger entries."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def find_payments(
        self, f: PaymentFilter, limit: int, before: int | None = None, after: int | None = None
    ) -> FoundPayments:
        """Up to `limit` payments matching `f`, newest first, read by index (see the module's
        docstring): the newest with ids below `before` (None: from the newest), or, with
        `after`, the oldest with ids above it (the page before one), still newest first."""
        with self.db.reading() as conn:
            return self._find(conn, f, limit, before, after)

    def _find(
        self,
        conn: Connection,
        f: PaymentFilter,
        limit: int,
        before: int | None,
        after: int | None,
    ) -> FoundPayments:
        p = t.payments.c
        where: list[ColumnElement[bool]] = []
        matched: str | None = None
        # Either side of a payment: two index range scans merged here (an OR of the two
        # columns is a bitmap of ALL the account's payments, sorted, on PostgreSQL).
        sides: list[ColumnElement[bool]] = []
        # The search text: what it names, by unique index first.
        if f.payment_id is not None:
            matched = "id"
            where.append(p.id == f.payment_id if f.payment_id <= MAX_ID else false())
        elif f.text is not None:
            matched, found = self._search(conn, f.text)
            if matched == "memo":
                # Any case, as typed (LIKE's own wildcards escaped): a stretched filter.
                where.append(p.memo.icontains(f.text, autoescape=True))
            elif matched == "account":
                sides = [p.payer_id == found[0], p.payee_id == found[0]]
            else:
                where.append(p.id.in_(found) if found else false())
        for column, name in ((p.payer_id, f.payer), (p.payee_id, f.payee)):
            if name is not None:
                where.append(column == self._account_id(conn, name))
        if f.account is not None:
            account = self._account_id(conn, f.account)
            if sides:  # the search named an account too: payments between the two
                where.append(or_(*(s for s in sides)))
            sides = [p.payer_id == account, p.payee_id == account]
        if f.state is not None:
            where.append(p.state == f.state)
        if f.currency is not None:
            where.append(p.currency == f.currency)
        if f.status is not None:
            where.append(_status_is(f.status))
        has = _has_occurrence(f)
        if has is not None:
            where.append(has)
        if f.occurrence is not None and f.occurrence in _UNFINISHED:
            # Few rows in these states: the (state, due_at) index lists their payments.
            o = t.occurrences.c
            where.append(p.id.in_(select(o.payment_id).where(o.state == f.occurrence)))
        stretched = f.stretched() or matched == "memo"
        if after is None:  # newest first, below `before`
            low = 1
            if before is not None:
                where.append(p.id < before)
            if stretched:  # the stretch below `before`, or below the newest payment
                top = before if before is not None else self._next_id(conn)
                low = max(1, top - STRETCH)
                where += [p.id >= low, p.id < top]
            rows = self._rows(conn, where, sides, limit + 1, newest=True)
            shown = rows[:limit]
            older = shown[-1].id if len(rows) > limit else (low if low > 1 else None)
            newer = None if before is None else (shown[0].id if shown else before - 1)
            return FoundPayments(shown, older, newer, matched, low if stretched else None)
        # Oldest first above `after` (the page before one), shown newest first all the same.
        end = self._next_id(conn)
        high = min(end - 1, after + STRETCH) if stretched else end - 1
        where.append(p.id > after)
        if stretched:
            where.append(p.id <= high)
        rows = self._rows(conn, where, sides, limit + 1, newest=False)
        shown = rows[:limit]
        full = len(rows) > limit
        newer = shown[-1].id if full else (high if high < end - 1 else None)
        shown.reverse()
        older = shown[-1].id if shown else after + 1
        return FoundPayments(shown, older, newer, matched, after + 1 if stretched else None)

    def _rows(
        self,
        conn: Connection,
        where: list[ColumnElement[bool]],
        sides: Sequence[ColumnElement[bool]],
        limit: int,
        newest: bool,
    ) -> list[Payment]:
        order = t.payments.c.id.desc() if newest else t.payments.c.id
        query = payment_select().where(*where).order_by(order).limit(limit)
        if not sides:
            return [payment_from(r) for r in conn.execute(query)]
        merged = {
            payment.id: payment
            for side in sides
            for payment in map(payment_from, conn.execute(query.where(side)))
        }
        return [merged[pid] for pid in sorted(merged, reverse=newest)[:limit]]

    def _search(self, conn: Connection, text: str) -> tuple[str, list[int]]:
        """What the search text names, and the payment ids (an account's id) it leads to:
        an occurrence key, a provider reference, an account name (each by a unique or its own
        index), or else memo text."""
        o, a = t.occurrences.c, t.accounts.c
        by_key = conn.execute(select(o.payment_id).where(o.key == text)).first()
        if by_key is not None:
            return "occurrence key", [by_key.payment_id]
        # One reference may name a few occurrences (a provider reusing ids): their payments.
        by_reference = conn.execute(
            select(o.payment_id).where(o.reference == text).limit(1000)
        ).all()
        if by_reference:
            return "reference", sorted({r.payment_id for r in by_reference})
        account = conn.execute(select(a.id).where(a.name == text).where(a.kind == "user")).first()
        if account is not None:
            return "account", [account.id]
        return "memo", []

    def _account_id(self, conn: Connection, name: str) -> int:
        """The account's id; 0 (no account has it) for a name no account has, so that the
        page is empty rather than an error: a filter names what to show, not what exists."""
        found = conn.execute(select(t.accounts.c.id).where(t.accounts.c.name == name)).first()
        return int(found.id) if found is not None else 0

    def _next_id(self, conn: Connection) -> int:
        """One above the newest payment's id (the end of the primary key's index)."""
        top = conn.execute(select(func.max(t.payments.c.id))).scalar_one_or_none()
        return int(top or 0) + 1

    def ledger_entries(
        self, account: str, limit: int, before: int | None = None
    ) -> list[LedgerEntry]:
        """The account's ledger entries, newest first, below entry id `before`; each with the
        payment its occurrence belongs to (None for a deposit). An unknown name: none."""
        le, o = t.ledger_entries.c, t.occurrences.c
        with self.db.reading() as conn:
            account_id = self._account_id(conn, account)
            query = (
                select(
                    le.id, le.amount, le.transfer_id, le.occurrence_id, le.created_at, o.payment_id
                )
                .select_from(
                    t.ledger_entries.outerjoin(
                        t.occurrences, t.occurrences.c.id == le.occurrence_id
                    )
                )
                .where(le.account_id == account_id)
                .order_by(le.id.desc())
                .limit(limit)
            )
            if before is not None:
                query = query.where(le.id < before)
            return [
                LedgerEntry(
                    r.id,
                    int(r.amount),
                    r.transfer_id,
                    r.occurrence_id,
                    r.payment_id,
                    r.created_at,
                )
                for r in conn.execute(query)
            ]
