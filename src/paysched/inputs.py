"""What a caller asks paysched to do, checked in one place.

The command line and the Python API (`paysched.client`) both turn a request to schedule a
payment or to deposit money into validated values here, so the two accept and refuse exactly
the same things, in the same order, with the same messages. Only the spelling of the
parameters in messages differs (`--in` on the command line, `in_` in Python): see `Names`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from paysched.domain import parse_currency, parse_positive_amount, shown
from paysched.errors import InvalidInput
from paysched.notify.targets import normalise_targets
from paysched.schedules import (
    MAX_DURATION,
    check_instant,
    parse_duration,
    parse_instant,
    parse_timezone,
    validate_cron,
)


@dataclass(frozen=True, slots=True)
class Names:
    """How the caller spells the schedule's parameters: labels for messages, fields for
    InvalidInput.field, and the hint that lets a past due time through."""

    at: str = "at"
    in_: str = "in_"
    cron: str = "cron"
    tz: str = "tz"
    in_field: str = "in_"
    payer_field: str = "payer"
    payee_field: str = "payee"
    allow_past: str = "pass allow_past=True"
    tz_field: str = "tz"


PYTHON_NAMES = Names()
CLI_NAMES = Names(at="--at", in_="--in", cron="--cron", tz="--tz", in_field="in",
                  payer_field="from", payee_field="to", allow_past="pass --allow-past")  # fmt: skip
HTTP_NAMES = Names(at="at", in_="in", cron="cron", tz="timezone", in_field="in",
                   payer_field="from", payee_field="to", allow_past="set allow_past",
                   tz_field="timezone")  # fmt: skip


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A payment to schedule, every field checked; the keyword arguments of
    App.create_payment (see `fields`)."""

    payer: str
    payee: str
    amount: int  # minor units
    currency: str
    due_at: datetime | None  # one-time payments (UTC)
    cron: str | None  # recurring payments
    timezone: str | None
    memo: str
    notify: tuple[str, ...]

    def fields(self) -> dict[str, object]:
        return {
            "payer": self.payer, "payee": self.payee, "amount": self.amount,
            "currency": self.currency, "due_at": self.due_at, "cron": self.cron,
            "timezone": self.timezone, "memo": self.memo, "notify": list(self.notify),
        }  # fmt: skip


def _given(value: object) -> bool:
    # The command line passes '' for an option typed empty: not given, as before. A Python
    # timedelta(0) is falsy but given ("now").
    return value is not None and value != ""


def check_schedule_choice(
    at: object, in_: object, cron: object, tz: object, names: Names = PYTHON_NAMES
) -> None:
    """Exactly one of a due time, a delay or a cron expression; a time zone only with cron."""
    if sum(_given(v) for v in (at, in_, cron)) != 1:
        raise InvalidInput(
            "schedule", f"give exactly one of {names.at}, {names.in_} or {names.cron}"
        )
    if _given(tz) and not _given(cron):
        raise InvalidInput(names.tz_field, f"{names.tz} applies to {names.cron} schedules")


def amount_text(value: object, field: str = "amount") -> str:
    """A Decimal or a decimal string as the text parse_amount checks. A float is refused
    rather than rounded (0.1 + 0.2 is not 0.3), and so is an int: 100 could mean 100 dollars
    or 100 cents, so it must be spelt out."""
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        # Plain notation: Decimal("1E+2") is 100, not an exponent to refuse. NaN and
        # infinities stay words, and parse_amount refuses them.
        return format(value, "f")
    if isinstance(value, float):
        raise InvalidInput(
            field, f"got the float {value!r}; pass a Decimal or a string such as '12.34' "
            "(floats cannot hold amounts of money exactly)",
        )  # fmt: skip
    kind = type(value).__name__
    raise InvalidInput(field, f"expected a Decimal or a string such as '12.34', got {kind} "
                              f"{shown(str(value))}")  # fmt: skip


def payment_request(
    *,
    payer: str,
    payee: str,
    amount: str | Decimal,
    currency: str,
    at: datetime | str | None,
    in_: timedelta | str | None,
    cron: str | None,
    tz: str | None,
    memo: str,
    notify: Sequence[str] | None,
    allow_past: bool,
    allow_private: bool,
    now: datetime,
    names: Names = PYTHON_NAMES,
) -> PaymentRequest:
    """Check a request to schedule a payment; InvalidInput naming the first bad field.

    `at` is an aware datetime or ISO-8601 text with an offset; `in_` a non-negative timedelta
    or a duration like '30s'. Whether the accounts exist, differ and hold `currency` is
    checked by the store when the payment is written (there, fields `from` and `to`)."""
    check_schedule_choice(at, in_, cron, tz, names)
    for field, text in ((names.payer_field, payer), (names.payee_field, payee), ("memo", memo)):
        if not isinstance(text, str):
            raise InvalidInput(field, f"expected a string, got {type(text).__name__}")
    code = parse_currency(currency)
    minor = parse_positive_amount(amount_text(amount), code)
    if isinstance(notify, str):  # a bare string would be checked one character at a time
        raise InvalidInput("notify", f"expected a list of targets, got the string {notify!r}")
    targets = normalise_targets(list(notify or []), "notify", allow_private)
    if _given(tz):
        parse_timezone(str(tz), names.tz_field)
    if _given(cron):
        validate_cron(str(cron), "cron")
    due_at: datetime | None = None
    if _given(at):
        due_at, text = _instant(at, "at")
        if due_at < now and not allow_past:
            raise InvalidInput("at", f"{text} is in the past; {names.allow_past} to run it at once")
    if _given(in_):
        due_at = now + _delay(in_, names.in_field)
    return PaymentRequest(
        payer=payer, payee=payee, amount=minor, currency=code, due_at=due_at,
        cron=cron, timezone=tz, memo=memo, notify=tuple(targets),
    )  # fmt: skip


def _instant(value: object, field: str) -> tuple[datetime, str]:
    """The due time in UTC, and how to show the caller's value in a message."""
    if isinstance(value, str):
        return parse_instant(value, field), value
    if isinstance(value, datetime):
        return check_instant(value, field, value.isoformat()), value.isoformat()
    raise InvalidInput(field, f"expected a datetime with a time zone, got {type(value).__name__}")


def _delay(value: object, field: str) -> timedelta:
    if isinstance(value, str):
        return parse_duration(value, field)
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise InvalidInput(field, f"must not be negative, got {value}")
        if value > MAX_DURATION:
            raise InvalidInput(field, f"at most {MAX_DURATION.days}d, got {value}")
        return value
    raise InvalidInput(field, f"expected a timedelta, got {type(value).__name__}")


def deposit_amount(amount: str | Decimal, currency: str) -> int:
    """A deposit into an account holding `currency`, in minor units (the same rules as a
    payment's amount)."""
    return parse_positive_amount(amount_text(amount), currency)


__all__ = [
    "CLI_NAMES", "HTTP_NAMES", "PYTHON_NAMES", "Names", "PaymentRequest", "amount_text",
    "check_schedule_choice", "deposit_amount", "payment_request",
]  # fmt: skip
