"""What the bot says: every message is one of these templates, filled in by a pure function.

README's "From the chat" section is `readme_section()`'s output for a made-up account
(tests/integration/test_bot.py checks it word for word): regenerate it with
`python -m paysched.bot.messages` after changing a template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from paysched.domain import Account, format_amount

HELP = (
    "I tell you about the scheduled payments of the accounts linked to this chat.\n"
    "\n"
    "/upcoming – the next payments, with amounts and dates\n"
    "/history – what became of the latest payments\n"
    "/balance – the balance of each linked account\n"
    "/help – this message"
)
NOT_LINKED = (
    "Sorry, this chat is not linked to an account, so I can't show or change anything "
    "here. Ask the account's owner for a link (paysched accounts link NAME --telegram) "
    "and open it in this chat."
)
# A button pressed in a chat that may not act: the short answer Telegram shows as a toast.
NOT_LINKED_SHORT = "Sorry, this chat is not linked to that account: nothing was changed."
LINKED = "Done: this chat is now linked to the account {account}. Try /upcoming or /balance."
LINKED_APPROVER = (
    "\nAs its approver, you approve or reject here the payments that wait for approval."
)
LINK_REFUSED = {
    "unknown": "Sorry, that link is not valid, so nothing was linked. Ask for a new one.",
    "expired": "Sorry, that link has expired, so nothing was linked. Ask for a new one.",
    "used": "Sorry, that link has already been used, so nothing was linked. Ask for a new one.",
}
UNKNOWN_COMMAND = "Sorry, I don't know that one. /help lists what I can do."
FAILED = "Sorry, something went wrong on my side. Please try again in a minute."

UPCOMING_HEAD = "Next payments:"
UPCOMING_NONE = "No payments are coming up."
HISTORY_HEAD = "Latest payments:"
HISTORY_NONE = "No payments have run yet."
PAYMENT_LINE = "• {when}\n  {amount} {currency}, {payer} → {payee} (payment #{payment_id})"
OUTCOME = " — {outcome}"
# A reminder, with its buttons; and what a button press did, added to it (or as the toast).
REMINDER = (
    "Reminder: {amount} {currency}, {payer} → {payee}, is due {when}{memo}.\n"
    "(payment #{payment_id})"
)
REMINDER_MEMO = " ({memo})"
SKIP_BUTTON = "Skip this one"
PAUSE_BUTTON = "Pause the series"
SKIPPED = "Skipped by you: this one will not be paid; the series goes on."
PAUSED = "Series paused by you: nothing more of it is paid until it is resumed."
ALREADY_SKIPPED = "Already done: this one was already skipped. Nothing was changed."
ALREADY_PAUSED = "Already done: the series is already paused. Nothing was changed."
TOO_LATE = {
    "ran": "Too late: it already ran. Nothing was changed.",
    "cancelled": "Too late: the payment was cancelled. Nothing was changed.",
    "missed": "Too late: it was missed (not run late). Nothing was changed.",
    "done": "Too late: nothing of this payment is left to run. Nothing was changed.",
    "gone": "Too late: this reminder is out of date. Nothing was changed.",
}
UNKNOWN_BUTTON = "Sorry, I don't know that button: nothing was changed."
BALANCE_HEAD = "Balances:"
BALANCE_LINE = "• {account}: {balance} {currency}"

# An occurrence's state as a person reads it in /history.
OUTCOMES = {
    "succeeded": "paid",
    "failed": "failed, nothing was moved",
    "cancelled": "cancelled",
    "skipped": "skipped",
    "missed": "missed, not run late",
    "needs_review": "outcome unknown, a person is checking",
    "unknown": "outcome being checked with the provider",
    "executing": "being paid now",
}


@dataclass(frozen=True, slots=True)
class PaymentLine:
    """One payment of /upcoming (its next due time) or /history (an occurrence's)."""

    payment_id: int
    at: datetime
    amount: int  # minor units
    currency: str
    payer: str
    payee: str
    zone: str | None  # the payment's own zone; None is UTC
    state: str | None = None  # the occurrence's, for /history


def when(at: datetime, zone: str | None) -> str:
    """ "Tue 01 Dec 2026, 09:00 Europe/Berlin": in the payment's own zone, the one it was
    scheduled in (UTC without one), named, so a chat in another zone is not misled."""
    tz: ZoneInfo | None = None
    if zone and zone.upper() not in ("UTC", "ETC/UTC"):
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):  # validated on the way in; UTC if gone
            tz = None
    local = at.astimezone(tz or UTC)
    return f"{local:%a %d %b %Y, %H:%M} {zone if tz else 'UTC'}"


def linked(account: str, role: str = "holder") -> str:
    text = LINKED.format(account=account)
    return text + LINKED_APPROVER if role == "approver" else text


def refused(reason: str) -> str:
    return LINK_REFUSED.get(reason, LINK_REFUSED["unknown"])


def _line(p: PaymentLine) -> str:
    text = PAYMENT_LINE.format(
        when=when(p.at, p.zone),
        amount=format_amount(p.amount, p.currency),
        currency=p.currency,
        payer=p.payer,
        payee=p.payee,
        payment_id=p.payment_id,
    )
    if p.state is not None:
        text += OUTCOME.format(outcome=OUTCOMES.get(p.state, p.state))
    return text


def upcoming(lines: Sequence[PaymentLine]) -> str:
    if not lines:
        return UPCOMING_NONE
    return "\n".join([UPCOMING_HEAD, *(_line(p) for p in lines)])


def history(lines: Sequence[PaymentLine]) -> str:
    if not lines:
        return HISTORY_NONE
    return "\n".join([HISTORY_HEAD, *(_line(p) for p in lines)])


def reminder(
    payment_id: int,
    at: datetime,
    amount: int,
    currency: str,
    payer: str,
    payee: str,
    zone: str | None,
    memo: str,
) -> str:
    """The reminder of one occurrence, due `at`, in the payment's own zone."""
    return REMINDER.format(
        amount=format_amount(amount, currency),
        currency=currency,
        payer=payer,
        payee=payee,
        when=when(at, zone),
        memo=REMINDER_MEMO.format(memo=memo) if memo else "",
        payment_id=payment_id,
    )


def reminder_buttons(payment_id: int, due_ms: int) -> list[list[dict[str, str]]]:
    """The reminder's inline keyboard, as the Bot API takes it (rows of buttons); their
    callback data (at most 64 bytes) name the verb of paysched.bot.buttons and its args."""
    return [
        [
            {"text": SKIP_BUTTON, "callback_data": f"skip:{payment_id}:{due_ms}"},
            {"text": PAUSE_BUTTON, "callback_data": f"pause:{payment_id}"},
        ]
    ]


def pressed(original: str, outcome: str) -> str:
    """The reminder once a button was pressed: what it said, and what became of it."""
    return f"{original}\n\n{outcome}"


def balances(accounts: Sequence[Account]) -> str:
    lines = [
        BALANCE_LINE.format(
            account=a.name, balance=format_amount(a.balance, a.currency), currency=a.currency
        )
        for a in accounts
    ]
    return "\n".join([BALANCE_HEAD, *lines])


# -- README's "From the chat" ------------------------------------------------------------------

README_BEGIN = "<!-- bot-messages: begin (python -m paysched.bot.messages) -->"
README_END = "<!-- bot-messages: end -->"


def conversation() -> list[tuple[str, str]]:
    """A made-up chat: (what the person sends, what the bot answers)."""

    def rent(at: datetime, state: str | None = None) -> PaymentLine:
        return PaymentLine(12, at, 95_000, "EUR", "alice", "landlord", "Europe/Berlin", state)

    def gym(at: datetime, state: str | None = None) -> PaymentLine:
        return PaymentLine(14, at, 2_999, "EUR", "alice", "gym", None, state)

    due = _utc(2026, 12, 1, 8)
    rent_reminder = reminder(12, due, 95_000, "EUR", "alice", "landlord", "Europe/Berlin", "rent")
    keys = "  ".join(f"[ {b['text']} ]" for row in reminder_buttons(12, 0) for b in row)
    shown = f"{rent_reminder}\n{keys}"

    return [
        ("/upcoming", NOT_LINKED),
        ("/start 3q2-expired-token", refused("expired")),
        ("/start Xk9v…", linked("alice")),
        ("/upcoming", upcoming([rent(_utc(2026, 12, 1, 8)), gym(_utc(2026, 12, 3, 6))])),
        (
            "/history",
            history([rent(_utc(2026, 11, 1, 8), "succeeded"), gym(_utc(2026, 11, 3, 6), "failed")]),
        ),
        ("/balance", balances([Account(1, "alice", "EUR", 125_000)])),
        ("/help", HELP),
        ("/pay bob 10", UNKNOWN_COMMAND),
        ("(3 hours before payment #12 falls due: paysched schedule ... --remind 3h)", shown),
        (f"(taps {SKIP_BUTTON})", pressed(rent_reminder, SKIPPED)),
        (f"(taps {SKIP_BUTTON} again: the answer shows as a toast)", ALREADY_SKIPPED),
        *_approval_conversation(),
    ]


def _approval_conversation() -> list[tuple[str, str]]:
    """The approver's side: linked by `paysched accounts link alice --telegram --approver`,
    asked when a payment requiring approval falls due, answering with a button."""
    # Here, not at the top: the approval texts live with the notifications they go out in.
    from paysched import approvals
    from paysched.bot.approvals import _line
    from paysched.db.store.approvals import Decided
    from paysched.domain import Occurrence, OccurrenceState, Payment, PaymentState

    due = _utc(2026, 12, 2, 9)
    payment = Payment(
        id=15,
        payer="alice",
        payee="builder",
        amount=480_000,
        currency="EUR",
        state=PaymentState.DONE,
        due_at=due,
        cron=None,
        timezone="Europe/Berlin",
        next_due_at=None,
        memo="roof repair",
        created_at=_utc(2026, 11, 20, 10),
        approval="required",
        approval_timeout=timedelta(hours=2),
        approval_on_timeout="skip",
    )
    waiting = Occurrence(
        id=31,
        payment_id=15,
        key="pay-15-1764666000000",
        due_at=due,
        state=OccurrenceState.AWAITING_APPROVAL,
        attempts=0,
        fence=0,
        reason=None,
        started_at=None,
        finished_at=None,
        approval_deadline=due + timedelta(hours=2),
    )
    asked = approvals.needed_text(payment, waiting)
    keys = "  ".join(f"[ {b['text']} ]" for row in approvals.buttons(31) for b in row)
    approved = replace(waiting, state=OccurrenceState.SCHEDULED)
    said = _line("approve", Decided(approved, payment))
    return [
        ("/start Qm7r… (an approver's link)", linked("alice", "approver")),
        ("(payment #15 falls due: paysched schedule ... --approval required)", f"{asked}\n{keys}"),
        ("(taps ✅ Approve)", pressed(asked, said)),
    ]


def _utc(year: int, month: int, day: int, hour: int) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def readme_section() -> str:
    """The block README.md shows between its markers."""
    parts = [README_BEGIN]
    for sent, answer in conversation():
        parts += ["", f"> {sent}", "", "```text", answer, "```"]
    return "\n".join([*parts, "", README_END])


if __name__ == "__main__":
    print(readme_section())
