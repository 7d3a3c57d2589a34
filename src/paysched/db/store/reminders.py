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
    select,
    update,
)

from paysched.db import tables as t
from paysched.db.store.base import StoreBase
from paysched.db.store.rows import payment_from, payment_select
from paysched.db.tables import UTCDateTime
from paysched.domain import (
    OutboxMessage,
    Payment,
    PaymentState,
)

# The outbox rows of a reminder: the payment, the due time it reminds of, the payer's chats.
ReminderOutbox = Callable[[Payment, datetime, Sequence[str]], Sequence[OutboxMessage]]

# Reminders are at most this long ahead (paysched.inputs.REMIND_MAX): the sweep reads only
# payments due within it.
REMIND_HORIZON = timedelta(days=30)


class RemindersStore(StoreBase):
    """The reminder sweep (run by the scheduler's tick)."""

    def remind_due(self, now: datetime, outbox_of: ReminderOutbox, limit: int = 500) -> int:
        """Write the reminders that are due: for each active payment with a reminder whose
        next occurrence falls due within its `remind_s` and was not reminded yet, the outbox
        rows `outbox_of(payment, due_at, chat_ids)` gives for the payer's linked chats, and
        `reminded_due_at` set to that due time, in ONE transaction. Exactly once: the payments
        are locked (a concurrent sweep skips them), `reminded_due_at` is set by
        compare-and-set, and the rows' dedup keys are unique. Returns how many payments were
        due (`limit`: call again for more)."""
        p = t.payments.c
        reminding = and_(
            p.remind_s.is_not(None),
            p.state == PaymentState.ACTIVE.value,
            p.next_due_at <= now + REMIND_HORIZON,  # the partial index's range
            p.reminded_due_at.is_distinct_from(p.next_due_at),
            self._in_window(now),
        )
        with self._reading() as conn:  # with nothing due, no write transaction
            if conn.execute(select(p.id).where(reminding).limit(1)).first() is None:
                return 0
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(p.id, p.next_due_at, p.remind_s, p.payer_id)
                .where(reminding)
                .order_by(p.next_due_at, p.id)
                .limit(limit)
                .with_for_update(skip_locked=True, key_share=True)
            ).all()
            due = [r for r in rows if r.next_due_at - timedelta(seconds=r.remind_s) <= now]
            if not due:
                return 0
            cl = t.chat_links.c
            chats: dict[int, list[str]] = {}
            for account_id, chat_id in conn.execute(
                select(cl.account_id, cl.chat_id)
                .where(cl.account_id.in_({r.payer_id for r in due}), cl.channel == "telegram")
                .order_by(cl.id)
            ):
                chats.setdefault(account_id, []).append(chat_id)
            payments = {
                pay.id: pay
                for pay in map(
                    payment_from,
                    conn.execute(payment_select().where(p.id.in_([r.id for r in due]))),
                )
            }
            messages: list[OutboxMessage] = []
            for r in due:
                marked = conn.execute(
                    update(t.payments)
                    .where(p.id == r.id, p.next_due_at == r.next_due_at)
                    .where(p.reminded_due_at.is_distinct_from(r.next_due_at))
                    .values(reminded_due_at=r.next_due_at)
                )
                if marked.rowcount == 1:
                    messages += outbox_of(payments[r.id], r.next_due_at, chats.get(r.payer_id, []))
            self._enqueue_notifications(conn, messages, now)
            return len(due)

    def _in_window(self, now: datetime) -> ColumnElement[bool]:
        """next_due_at - remind_s <= now, as each database computes it (to the second: the
        caller checks exactly)."""
        p = t.payments.c
        if self.dialect == "postgresql":
            second: ColumnElement[Any] = literal_column("interval '1 second'")
            return p.next_due_at <= literal(now, UTCDateTime) + p.remind_s * second
        days = func.julianday(literal(now, UTCDateTime)) + (p.remind_s + 1) / 86400.0
        return func.julianday(p.next_due_at) <= days
