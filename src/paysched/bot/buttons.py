"""What the bot's inline buttons do: a registry of verbs.

A button's callback data is `verb:arg:arg...` (at most 64 bytes, Telegram's limit). The bot
looks the verb up in VERBS and awaits its handler with a Press: the pressing chat, the
accounts it is linked to (with each link's role) and the args. The handler acts through the
App (the same operations, and the same `actions` records, as the API) and returns the line
that says what happened: the bot shows it as the answer to the press (a toast) and adds it to
the message the button was under (its buttons go). A handler raises Refused when the press
must change nothing and leave the message as it is (a chat not linked to the payment's
payer, args no button of ours carries).

Adding a verb is one line, `VERBS["name"] = handler`, for a button whose callback data
starts `name:`. Each handler must be safe to run twice for one press: a double tap, a
replayed update or a second linked chat pressing the same button all come here. The store's
compare-and-sets decide who acted; the others get the "already done" or "too late" line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paysched.actors import Actor
from paysched.bot import approvals, messages
from paysched.clock import from_ms
from paysched.db.links import CHANNEL, LinkedAccount
from paysched.db.store.control import NotSkippable
from paysched.domain import MAX_ID, Payment, PaymentState
from paysched.errors import Conflict, NotFound

if TYPE_CHECKING:
    from paysched.app import App

DATA_MAX = 64  # bytes of callback_data Telegram keeps


class Refused(Exception):
    """Nothing was changed and the message stays as it is; str(self) is the answer."""


@dataclass(frozen=True, slots=True)
class Press:
    """One press of one of the bot's buttons."""

    app: App
    chat_id: str
    links: list[LinkedAccount]  # the accounts the chat speaks for; never empty
    args: list[str]  # the callback data after the verb

    @property
    def actor(self) -> Actor:
        return Actor.chat(CHANNEL, self.chat_id)

    def roles(self, account: str) -> set[str]:
        """This chat's roles for `account` (none: it may not act on it)."""
        return {link.role for link in self.links if link.account.name == account}

    def number(self, index: int) -> int:
        """Arg `index` as a positive id or instant; Refused for anything else."""
        try:
            text = self.args[index]
        except IndexError:
            raise Refused(messages.UNKNOWN_BUTTON) from None
        if not (text.isascii() and text.isdigit() and len(text) <= 14):
            raise Refused(messages.UNKNOWN_BUTTON)
        return int(text)

    async def payers_payment(self, index: int = 0) -> Payment:
        """The payment whose id is arg `index`, if this chat is linked to its payer (any
        role: holders and approvers may both skip and pause); Refused otherwise, in the
        same words whether the payment exists or not."""
        payment_id = self.number(index)
        if not 0 < payment_id <= MAX_ID:
            raise Refused(messages.NOT_LINKED_SHORT)
        try:
            payment = await self.app.db(self.app.store.payments.get_payment, payment_id)
        except NotFound:
            raise Refused(messages.NOT_LINKED_SHORT) from None
        if not self.roles(payment.payer):
            raise Refused(messages.NOT_LINKED_SHORT)
        return payment


Handler = Callable[[Press], Awaitable[str]]


async def skip(press: Press) -> str:
    """`skip:PAYMENT:DUE_MS`: skip that occurrence, only that one (a reminder's)."""
    payment = await press.payers_payment(0)
    due_at = from_ms(press.number(1))
    try:
        await press.app.skip_occurrence(payment.id, due_at, actor=press.actor)
    except NotSkippable as refused:
        if refused.why == "skipped":
            return messages.ALREADY_SKIPPED
        return messages.TOO_LATE.get(refused.why, messages.TOO_LATE["gone"])
    return messages.SKIPPED


async def pause(press: Press) -> str:
    """`pause:PAYMENT`: pause the whole series."""
    payment = await press.payers_payment(0)
    try:
        await press.app.pause_payment(payment.id, actor=press.actor)
    except Conflict:
        # What it is now says why: paused already (a double tap, another chat), or over.
        now = await press.app.db(press.app.store.payments.get_payment, payment.id)
        if now.state == PaymentState.PAUSED:
            return messages.ALREADY_PAUSED
        if now.state == PaymentState.CANCELLED:
            return messages.TOO_LATE["cancelled"]
        return messages.TOO_LATE["done"]
    return messages.PAUSED


async def _decide(press: Press, verb: str) -> str:
    """`approve:OCCURRENCE` / `reject:OCCURRENCE` under an "approval needed" message: only a
    chat linked to the payer as its approver decides (bot/approvals.py)."""
    occurrence_id = press.number(0)
    approver_of = [link.account for link in press.links if link.role == "approver"]
    decide = approvals.VERBS[verb]
    line = await decide(press.app, press.chat_id, approver_of, occurrence_id)
    if line in (approvals.NOT_APPROVER, approvals.GONE):
        raise Refused(line)
    return line


async def approve(press: Press) -> str:
    return await _decide(press, "approve")


async def reject(press: Press) -> str:
    return await _decide(press, "reject")


VERBS: dict[str, Handler] = {
    "skip": skip,
    "pause": pause,
    "approve": approve,
    "reject": reject,
}


def parse(data: str) -> tuple[Handler, list[str]]:
    """The handler and args of a button's callback data; Refused if it is none of ours."""
    verb, _, rest = data.partition(":")
    handler = VERBS.get(verb)
    if handler is None or len(data.encode()) > DATA_MAX:
        raise Refused(messages.UNKNOWN_BUTTON)
    return handler, rest.split(":") if rest else []
