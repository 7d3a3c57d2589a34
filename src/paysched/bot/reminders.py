"""A reminder's outbox rows: one per chat linked to the payer's account, each with the
Skip / Pause buttons (paysched.bot.buttons acts on them). Pure: the scheduler's sweep
(Reminders.remind_due) writes them in the transaction that marks the occurrence reminded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from paysched.bot import messages
from paysched.bot.reads import zone_of
from paysched.clock import to_ms
from paysched.domain import OutboxMessage, Payment, format_amount

EVENT = "reminder"


def reminder_outbox(
    payment: Payment, due_at: datetime, chats: Sequence[str]
) -> list[OutboxMessage]:
    """The reminder of `payment`'s occurrence due at `due_at`, for each chat. The dedup key
    names payment, due time and chat: a sweep run twice writes each once."""
    due_ms = to_ms(due_at)
    zone = zone_of(payment.timezone, payment.recurrence)
    text = messages.reminder(
        payment.id,
        due_at,
        payment.amount,
        payment.currency,
        payment.payer,
        payment.payee,
        zone,
        payment.memo,
    )
    body = {
        "id": f"remind:{payment.id}:{due_ms}",
        "event": "payment.reminder",
        "payment_id": payment.id,
        "due_at": due_at.isoformat(timespec="milliseconds"),
        "amount": format_amount(payment.amount, payment.currency),
        "currency": payment.currency,
        "from": payment.payer,
        "to": payment.payee,
        "text": text,
        "buttons": messages.reminder_buttons(payment.id, due_ms),
    }
    payload = json.dumps(body, ensure_ascii=False)
    return [
        OutboxMessage(
            dedup_key=f"remind:{payment.id}:{due_ms}:{chat}",
            payment_id=payment.id,
            occurrence_id=None,
            event=EVENT,
            channel="telegram",
            target=chat,
            payload=payload,
        )
        for chat in chats
    ]
