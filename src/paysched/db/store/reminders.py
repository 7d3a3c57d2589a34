"""Reminders: the sweep that writes, once, the outbox rows reminding a payer's linked chats of
the occurrence coming next (with Skip / Pause buttons)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)

from paysched.db import tables as t
from paysched.db.store.base import Database, enqueue_notifications
from paysched.db.store.rows import payment_from, payment_select
from paysched.db.tables import UTCDateTime
from paysched.domain import (
    OccurrenceState,
    OutboxMessage,
    Payment,
    PaymentState,
)

# The outbox rows of a reminder: the payment, the due time it reminds of, the payer's chats.
ReminderOutbox = Callable[[Payment, datetime, Sequence[str]], Sequence[OutboxMessage]]

# Reminders are at most this long ahead (paysched.inputs.REMIND_MAX): the sweep reads only
# payments due within it.
REMIND_HORIZON = timedelta(days=30)


# Made occurrences a reminder may still name: not started (skip_occurrence skips these).
NOT_STARTED = (OccurrenceState.SCHEDULED.value, OccurrenceState.QUEUED.value)


class Reminders:
    """The reminder sweep (run by the scheduler's tick)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def remind_due(self, now: datetime, outbox_of: ReminderOutbox, limit: int = 500) -> int:
        """Write the reminders that are due: for each active payment with a reminder, each of
        its coming due times (its made occurrences not started yet, then its series' next)
        whose window (`remind_s` before it) has opened and that is later than the last one
        reminded of, the outbox rows `outbox_of(payment, due_at, chat_ids)` gives for the
        payer's linked chats, and `reminded_due_at` moved to the latest, in ONE transaction.
        A reminder shorter than the scheduler's look-ahead names an occurrence already made:
        it is reminded of all the same. Exactly once: the payments are locked (a concurrent
        sweep skips them), `reminded_due_at` is moved by compare-and-set, and the rows' dedup
        keys are unique. Returns how many payments were reminded (`limit`: call again for
        more)."""
        p = t.payments.c
        o = t.occurrences.c
        series = select(p.id).where(
            self._reminding(now, p.next_due_at),
            p.next_due_at <= now + REMIND_HORIZON,  # the partial index's range
        )
        made = (
            select(o.payment_id)
            .join_from(t.occurrences, t.payments, p.id == o.payment_id)
            .where(
                o.state.in_(NOT_STARTED),
                o.due_at <= now + REMIND_HORIZON,
                self._reminding(now, o.due_at),
            )
        )
        with self.db.reading() as conn:  # with nothing due, no write transaction
            if (
                conn.execute(series.limit(1)).first() is None
                and conn.execute(made.limit(1)).first() is None
            ):
                return 0
        with self.db.engine.begin() as conn:
            ids = set(conn.execute(series.limit(limit)).scalars())
            ids |= set(conn.execute(made.limit(limit)).scalars())
            rows = conn.execute(
                select(p.id, p.next_due_at, p.remind_s, p.payer_id, p.reminded_due_at)
                .where(p.id.in_(ids), p.remind_s.is_not(None))
                .where(p.state == PaymentState.ACTIVE.value)
                .order_by(p.id)
                .limit(limit)
                .with_for_update(skip_locked=True, key_share=True)
            ).all()
            coming: dict[int, set[datetime]] = {r.id: set() for r in rows}
            for r in rows:
                if r.next_due_at is not None:
                    coming[r.id].add(r.next_due_at)
            for payment_id, due_at in conn.execute(
                select(o.payment_id, o.due_at).where(
                    o.payment_id.in_(coming), o.state.in_(NOT_STARTED), o.due_at > now
                )
            ):
                coming[payment_id].add(due_at)
            dues: dict[int, list[datetime]] = {}
            for r in rows:  # exactly, to the microsecond (the SQL is to the second)
                window = timedelta(seconds=r.remind_s)
                after = r.reminded_due_at
                found = sorted(
                    d
                    for d in coming[r.id]
                    if now < d <= now + window and (after is None or d > after)
                )
                if found:
                    dues[r.id] = found
            if not dues:
                return 0
            cl = t.chat_links.c
            chats: dict[int, list[str]] = {}
            payers = {r.payer_id for r in rows if r.id in dues}
            for account_id, chat_id in conn.execute(
                select(cl.account_id, cl.chat_id)
                .where(cl.account_id.in_(payers), cl.channel == "telegram")
                .order_by(cl.id)
            ):
                chats.setdefault(account_id, []).append(chat_id)
            payments = {
                pay.id: pay
                for pay in map(payment_from, conn.execute(payment_select().where(p.id.in_(dues))))
            }
            messages: list[OutboxMessage] = []
            for r in rows:
                if r.id not in dues:
                    continue
                marked = conn.execute(
                    update(t.payments)
                    .where(p.id == r.id, p.reminded_due_at.is_not_distinct_from(r.reminded_due_at))
                    .values(reminded_due_at=dues[r.id][-1])
                )
                if marked.rowcount == 1:
                    for due_at in dues[r.id]:
                        messages += outbox_of(payments[r.id], due_at, chats.get(r.payer_id, []))
            enqueue_notifications(conn, messages, now)
            return len(dues)

    def _reminding(self, now: datetime, due: ColumnElement[datetime]) -> ColumnElement[bool]:
        """A reminding active payment's `due` (its series' next, or a made occurrence's) in
        its window and later than the last one reminded of."""
        p = t.payments.c
        return and_(
            p.remind_s.is_not(None),
            p.state == PaymentState.ACTIVE.value,
            due > literal(now, UTCDateTime),
            or_(p.reminded_due_at.is_(None), due > p.reminded_due_at),
            self._in_window(now, due),
        )

    def _in_window(self, now: datetime, due: ColumnElement[datetime]) -> ColumnElement[bool]:
        """due - remind_s <= now, as each database computes it (to the second: the caller
        checks exactly)."""
        p = t.payments.c
        if self.db.dialect == "postgresql":
            second: ColumnElement[Any] = literal_column("interval '1 second'")
            return due <= literal(now, UTCDateTime) + p.remind_s * second
        days = func.julianday(literal(now, UTCDateTime)) + (p.remind_s + 1) / 86400.0
        return func.julianday(due) <= days
