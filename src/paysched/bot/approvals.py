"""The Approve / Reject buttons of an "approval needed" message (paysched.approvals), pressed
in a chat: each is a plain async function answering the line the chat is shown.

Only a chat linked to the paying account as its approver (chat_links.role = approver) decides;
a holder's chat or any other gets a polite refusal and nothing changes. A stale button (the
occurrence was decided meanwhile, or timed out) says so and changes nothing: the decision is
the store's compare-and-set, once. The decision is recorded as the chat's (Actor.chat).

The bot has no queue: an approved occurrence is `scheduled`, and the scheduler's next tick
queues it (its reconcile queues every scheduled occurrence due within the look-ahead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from paysched.actors import Actor
from paysched.db.actions import Acting, Subject
from paysched.db.store import Store
from paysched.db.store.approvals import Decided, already
from paysched.domain import Account, OccurrenceState, format_amount
from paysched.errors import Conflict, NotFound

CHANNEL = "telegram"
CHAT_REASON = "rejected in the chat"
NOT_APPROVER = "Sorry, only an approver of the paying account can approve or reject this payment."
GONE = "This payment is no longer known here."


def _line(verb: str, decided: Decided) -> str:
    p = decided.payment
    money = f"{format_amount(p.amount, p.currency)} {p.currency}"
    head = f"payment #{p.id}: {money} from {p.payer} to {p.payee}"
    if verb == "approve":
        return f"✅ Approved {head}. It runs at its due time."
    return f"🚫 Rejected {head}. It will not run."


async def _decide(
    store: Store,
    chat_id: str,
    approver_of: Sequence[Account],
    occurrence_id: int,
    now: datetime,
    verb: str,
) -> str:
    try:
        occ, payer_id = await asyncio.to_thread(store.approvals.payer_id_of, occurrence_id)
    except NotFound:
        return GONE
    if payer_id not in {a.id for a in approver_of}:
        return NOT_APPROVER
    if occ.state != OccurrenceState.AWAITING_APPROVAL:  # a stale button
        return _sentence(already(occ))
    approve = verb == "approve"
    actor = Actor.chat(CHANNEL, chat_id)
    detail: dict[str, str | int] = {} if approve else {"reason": CHAT_REASON}

    def subject(d: Decided) -> Subject:
        return Subject(d.payment.id, d.occurrence.id, detail)

    acting = (
        Acting(actor, "approve", now, subject) if approve else Acting(actor, "reject", now, subject)
    )
    decide = partial(
        store.approvals.decide, occurrence_id, approve, actor, now, CHAT_REASON, acting.then()
    )
    try:
        decided = await asyncio.to_thread(decide)
    except Conflict as exc:  # decided by someone else meanwhile
        return _sentence(str(exc))
    acting.logged()
    return _line(verb, decided)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


async def approve(
    store: Store,
    chat_id: str,
    approver_of: Sequence[Account],
    occurrence_id: int,
    now: datetime,
) -> str:
    """The Approve button: `approver_of`, the accounts the chat is an approver of."""
    return await _decide(store, chat_id, approver_of, occurrence_id, now, "approve")


async def reject(
    store: Store,
    chat_id: str,
    approver_of: Sequence[Account],
    occurrence_id: int,
    now: datetime,
) -> str:
    """The Reject button."""
    return await _decide(store, chat_id, approver_of, occurrence_id, now, "reject")


# callback_data `<verb>:<occurrence id>` -> handler, for the bot's button registry.
VERBS = {"approve": approve, "reject": reject}
