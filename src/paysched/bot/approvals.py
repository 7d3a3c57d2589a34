"""The Approve / Reject buttons of an "approval needed" message (paysched.approvals), pressed
in a chat: each is a plain async function answering the line the chat is shown.

Only a chat linked to the paying account as its approver (chat_links.role = approver) decides;
a holder's chat or any other gets a polite refusal and nothing changes. A stale button (the
occurrence was decided meanwhile, or timed out) says so and changes nothing: the decision is
the store's compare-and-set, once. The decision is recorded as the chat's (Actor.chat).

The decision is App.decide's, as the API's and the dashboard's: inside `paysched run` an
approved occurrence is queued at once; `paysched bot` has no queue, so there it is `scheduled`
and the scheduler's next tick queues it (its reconcile queues every scheduled occurrence due
within the look-ahead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paysched.actors import Actor
from paysched.db.store.approvals import Decided, already
from paysched.domain import Account, OccurrenceState, format_amount
from paysched.errors import Conflict, NotFound

if TYPE_CHECKING:
    from paysched.app import App

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
    app: App,
    chat_id: str,
    approver_of: Sequence[Account],
    occurrence_id: int,
    verb: str,
) -> str:
    try:
        occ, payer_id = await app.db(app.store.approvals.payer_id_of, occurrence_id)
    except NotFound:
        return GONE
    if payer_id not in {a.id for a in approver_of}:
        return NOT_APPROVER
    if occ.state != OccurrenceState.AWAITING_APPROVAL:  # a stale button
        return _sentence(already(occ))
    actor = Actor.chat(CHANNEL, chat_id)
    try:
        decided = await app.decide(occurrence_id, verb == "approve", CHAT_REASON, actor=actor)
    except Conflict as exc:  # decided by someone else meanwhile
        return _sentence(str(exc))
    return _line(verb, decided)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


async def approve(
    app: App, chat_id: str, approver_of: Sequence[Account], occurrence_id: int
) -> str:
    """The Approve button: `approver_of`, the accounts the chat is an approver of."""
    return await _decide(app, chat_id, approver_of, occurrence_id, "approve")


async def reject(app: App, chat_id: str, approver_of: Sequence[Account], occurrence_id: int) -> str:
    """The Reject button."""
    return await _decide(app, chat_id, approver_of, occurrence_id, "reject")


# callback_data `<verb>:<occurrence id>` -> handler, for the bot's button registry.
VERBS = {"approve": approve, "reject": reject}
