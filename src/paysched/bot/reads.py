"""What the bot reads of the accounts a chat is linked to: the next payments and the latest
outcomes. Reads only, each in one statement per source, bounded by `limit`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, or_, select
from sqlalchemy.orm import aliased

from paysched.bot.messages import PaymentLine
from paysched.db import tables as t
from paysched.db.engine import reading
from paysched.domain import OccurrenceState, PaymentState

# Made (materialized) but not yet run: they come before the payment's next_due_at.
PENDING = (OccurrenceState.SCHEDULED, OccurrenceState.QUEUED, OccurrenceState.RETRYING)

p, o = t.payments.c, t.occurrences.c
payer, payee = aliased(t.accounts), aliased(t.accounts)
_COLUMNS = (
    p.id,
    p.amount,
    p.currency,
    p.timezone,
    p.recurrence,
    payer.c.name.label("payer"),
    payee.c.name.label("payee"),
)


def _of(account_ids: Sequence[int]) -> ColumnElement[bool]:
    return or_(p.payer_id.in_(account_ids), p.payee_id.in_(account_ids))


def _joined(query: Any) -> Any:
    return query.join(payer, payer.c.id == p.payer_id).join(payee, payee.c.id == p.payee_id)


def _zone(row: Any) -> str | None:
    return zone_of(row.timezone, row.recurrence)


def zone_of(timezone: str | None, recurrence: str | None) -> str | None:
    """The payment's own zone: its `timezone`, else its calendar rule's."""
    if timezone:
        return str(timezone)
    if recurrence:
        zone = json.loads(recurrence).get("timezone")
        return str(zone) if zone else None
    return None


def _line(row: Any, at: datetime, state: str | None = None) -> PaymentLine:
    return PaymentLine(
        row.id, at, int(row.amount), row.currency, row.payer, row.payee, _zone(row), state
    )


def upcoming(engine: Engine, account_ids: Sequence[int], limit: int = 10) -> list[PaymentLine]:
    """The next `limit` payments to or from the accounts, soonest first: occurrences made and
    waiting to run, then each active payment's next due time not yet made."""
    running = (PaymentState.ACTIVE, PaymentState.DONE)
    made = select(*_COLUMNS, o.due_at).select_from(t.occurrences)
    made = _joined(made.join(t.payments, p.id == o.payment_id))
    made = made.where(_of(account_ids), o.state.in_(PENDING), p.state.in_(running))
    coming = _joined(select(*_COLUMNS, p.next_due_at.label("due_at")).select_from(t.payments))
    coming = coming.where(_of(account_ids), p.state == PaymentState.ACTIVE)
    coming = coming.where(p.next_due_at.is_not(None))
    with reading(engine) as conn:
        rows = [
            *conn.execute(made.order_by(o.due_at, o.id).limit(limit)),
            *conn.execute(coming.order_by(p.next_due_at, p.id).limit(limit)),
        ]
    lines = [_line(r, r.due_at) for r in rows]
    return sorted(lines, key=lambda line: (line.at, line.payment_id))[:limit]


def history(engine: Engine, account_ids: Sequence[int], limit: int = 10) -> list[PaymentLine]:
    """The latest `limit` occurrences to or from the accounts that ran or were settled
    otherwise (skipped, missed, cancelled), newest first, each with its outcome."""
    query = select(*_COLUMNS, o.due_at, o.state).select_from(t.occurrences)
    query = _joined(query.join(t.payments, p.id == o.payment_id))
    query = query.where(_of(account_ids), o.state.not_in(PENDING))
    query = query.order_by(o.due_at.desc(), o.id.desc()).limit(limit)
    with reading(engine) as conn:
        return [_line(r, r.due_at, r.state) for r in conn.execute(query)]
