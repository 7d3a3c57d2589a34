"""What people are told about approvals: an occurrence awaiting one, and one nobody answered.

"Approval needed" goes to the payer account's approver chats with Approve / Reject buttons
(payload key `buttons`: rows of {"text", "callback_data"}, sent by the Telegram notifier as an
inline keyboard), and to the payment's other notify targets (or the deployment's default ones)
as a plain event. These are always sent: without them nobody knows to decide. Both are written
in the transaction that creates or moves the occurrence (the outbox).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from paysched.db import tables as t
from paysched.db.store.rows import payment_from, payment_select
from paysched.domain import Occurrence, OutboxMessage, Payment, format_amount
from paysched.notify.messages import _digest, local_time
from paysched.notify.targets import split_target

OccurrencesOutbox = Callable[[Connection, Sequence[Occurrence]], Sequence[OutboxMessage]]
APPROVE, REJECT = "approve", "reject"  # the buttons' verbs: callback_data `approve:<id>`


def buttons(occurrence_id: int) -> list[list[dict[str, str]]]:
    return [
        [
            {"text": "✅ Approve", "callback_data": f"{APPROVE}:{occurrence_id}"},
            {"text": "🚫 Reject", "callback_data": f"{REJECT}:{occurrence_id}"},
        ]
    ]


def _head(payment: Payment) -> str:
    money = f"{format_amount(payment.amount, payment.currency)} {payment.currency}"
    return f"Payment #{payment.id}: {money} from {payment.payer} to {payment.payee}"


def needed_text(payment: Payment, occ: Occurrence) -> str:
    when = local_time(occ.due_at, payment.timezone)
    text = f"✋ {_head(payment)} due {when} awaits approval."
    if occ.approval_deadline is not None:
        text += f" Unanswered by {local_time(occ.approval_deadline, payment.timezone)}, it is "
        text += "failed." if payment.approval_on_timeout == "fail" else "skipped."
    return text


def expired_text(payment: Payment, occ: Occurrence) -> str:
    return (
        f"⌛ {_head(payment)} due {local_time(occ.due_at, payment.timezone)} was "
        f"{occ.state.value}: {occ.reason}. No money was moved."
    )


def approver_chats(conn: Connection, account_id: int) -> list[str]:
    """The approver chats of an account, as notify targets (`telegram:CHAT`)."""
    cl = t.chat_links.c
    rows = conn.execute(
        select(cl.channel, cl.chat_id)
        .where(cl.account_id == account_id, cl.role == "approver")
        .order_by(cl.id)
    )
    return [f"{r.channel}:{r.chat_id}" for r in rows]


def _payments(conn: Connection, ids: set[int]) -> dict[int, tuple[Payment, int]]:
    """The payments, with their payer's account id."""
    rows = conn.execute(payment_select().where(t.payments.c.id.in_(ids)))
    return {r.id: (payment_from(r), int(r.payer_id)) for r in rows}


def _rows(
    event: str,
    payment: Payment,
    occ: Occurrence,
    at: datetime,
    text: str,
    targets: Sequence[tuple[str, dict[str, Any]]],
) -> list[OutboxMessage]:
    event_id = f"{occ.key}:{event}"
    body = {
        "id": event_id,
        "event": f"payment.{event}",
        "payment_id": payment.id,
        "occurrence": occ.key,
        "occurrence_id": occ.id,
        "amount": format_amount(payment.amount, payment.currency),
        "currency": payment.currency,
        "from": payment.payer,
        "to": payment.payee,
        "due_at": occ.due_at.isoformat(timespec="milliseconds"),
        "approval_deadline": None
        if occ.approval_deadline is None
        else occ.approval_deadline.isoformat(timespec="milliseconds"),
        "reason": occ.reason,
        "at": at.isoformat(timespec="milliseconds"),
        "text": text,
    }
    out: list[OutboxMessage] = []
    seen: set[str] = set()
    for spec, extra in targets:
        if spec in seen:  # an approver chat also named by the payment: once, with its buttons
            continue
        seen.add(spec)
        channel, target = split_target(spec)
        out.append(
            OutboxMessage(
                dedup_key=f"{event_id}:{channel}:{_digest(target)}",
                payment_id=payment.id,
                occurrence_id=occ.id,
                event=event,
                channel=channel,
                target=target,
                payload=json.dumps(body | extra, ensure_ascii=False),
            )
        )
    return out


def needed_outbox(default_targets: Sequence[str], now: Callable[[], datetime]) -> OccurrencesOutbox:
    """The "approval needed" notifications of occurrences just created awaiting approval."""

    def build(conn: Connection, occurrences: Sequence[Occurrence]) -> list[OutboxMessage]:
        if not occurrences:
            return []
        payments = _payments(conn, {o.payment_id for o in occurrences})
        chats: dict[int, list[str]] = {}
        out: list[OutboxMessage] = []
        for occ in occurrences:
            payment, payer_id = payments[occ.payment_id]
            if payer_id not in chats:
                chats[payer_id] = approver_chats(conn, payer_id)
            asked = [(c, {"buttons": buttons(occ.id)}) for c in chats[payer_id]]
            told: list[tuple[str, dict[str, Any]]] = [
                (s, {}) for s in payment.notify or default_targets
            ]
            out += _rows(
                "approval_needed", payment, occ, now(), needed_text(payment, occ), asked + told
            )
        return out

    return build


def expired_outbox(
    default_targets: Sequence[str], now: Callable[[], datetime]
) -> OccurrencesOutbox:
    """The notifications of occurrences their approval timeout skipped or failed: the
    payment's targets and the payer's approver chats (whose buttons are stale now)."""

    def build(conn: Connection, occurrences: Sequence[Occurrence]) -> list[OutboxMessage]:
        if not occurrences:
            return []
        payments = _payments(conn, {o.payment_id for o in occurrences})
        out: list[OutboxMessage] = []
        for occ in occurrences:
            payment, payer_id = payments[occ.payment_id]
            targets = [*approver_chats(conn, payer_id), *(payment.notify or default_targets)]
            out += _rows(
                "approval_timeout",
                payment,
                occ,
                now(),
                expired_text(payment, occ),
                [(s, {}) for s in targets],
            )
        return out

    return build
