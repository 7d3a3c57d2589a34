"""What a caller asks paysched to do, checked in one place.

The command line and the Python API (`paysched.client`) both turn a request to schedule a
payment or to deposit money into validated values here, so the two accept and refuse exactly
the same things, in the same order, with the same messages. Only the spelling of the
parameters in messages differs (`--in` on the command line, `in_` in Python): see `Names`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from paysched.domain import (
    APPROVAL_POLICIES,
    APPROVAL_TIMEOUT_OUTCOMES,
    CATCHUP_POLICIES,
    Account,
    amount_shape,
    check_text,
    normalise_name,
    parse_amount,
    parse_currency,
    parse_positive_amount,
    shown,
)
from paysched.errors import InvalidInput, NotFound
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
    rrule: str = "rrule"
    every: str = "every"
    rrule_field: str = "rrule"
    every_field: str = "every"
    start_field: str = "start"
    window_field: str = "catchup_window"
    remind_field: str = "remind"


PYTHON_NAMES = Names()
HTTP_NAMES = Names(
    at="at",
    in_="in",
    cron="cron",
    tz="timezone",
    in_field="in",
    payer_field="from",
    payee_field="to",
    allow_past="set allow_past",
    tz_field="timezone",
)
CLI_NAMES = Names(
    at="--at",
    in_="--in",
    cron="--cron",
    tz="--tz",
    in_field="in",
    payer_field="from",
    payee_field="to",
    allow_past="pass --allow-past",
    rrule="--rrule",
    every="--every",
)


# A reminder further ahead than this is a typo, not a plan.
REMIND_MAX = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A payment to schedule, every field checked; the keyword arguments of
    App.create_payment (see `fields`)."""

    payer: str
    payee: str
    amount: int | None  # minor units; None while the currency is not known (`in_currency`)
    currency: str | None  # None: the caller named none, and the payer's is looked up
    due_at: datetime | None  # one-time payments (UTC)
    cron: str | None  # recurring payments
    timezone: str | None
    memo: str
    notify: tuple[str, ...]
    recurrence: str | None = None  # paysched.recurrence.Recurrence as JSON
    catchup: str = "all"
    catchup_window: timedelta | None = None
    amount_text: str = ""
    remind: timedelta | None = None  # None: the payer's default
    approval: str = "none"  # required: each occurrence waits for a person's approval
    approval_timeout: timedelta | None = None
    approval_on_timeout: str | None = None  # skip | fail

    def in_currency(self, currency: str) -> PaymentRequest:
        """The request in `currency` (the payer's, when the caller named none): the amount
        checked against its decimals and limit."""
        code = parse_currency(currency)
        return replace(self, currency=code, amount=parse_positive_amount(self.amount_text, code))

    def fields(self) -> dict[str, object]:
        if self.amount is None or self.currency is None:
            raise ValueError("the payment's currency is not known yet: call in_currency()")
        return {
            "payer": self.payer,
            "payee": self.payee,
            "amount": self.amount,
            "currency": self.currency,
            "due_at": self.due_at,
            "cron": self.cron,
            "timezone": self.timezone,
            "memo": self.memo,
            "notify": list(self.notify),
            "recurrence": self.recurrence,
            "catchup": self.catchup,
            "catchup_window": self.catchup_window,
            "remind": self.remind,
            "approval": self.approval,
            "approval_timeout": self.approval_timeout,
            "approval_on_timeout": self.approval_on_timeout,
        }


@dataclass(frozen=True, slots=True)
class Calendar:
    """A calendar rule's parts as the caller gave them (all optional but one of rrule/every)."""

    rrule: str | None = None  # RFC 5545 RRULE body: "FREQ=MONTHLY;BYMONTHDAY=-1"
    every: str | None = None  # "2 weeks", "1 month", "3d": the simple interval rules
    start: datetime | str | None = None  # local wall time of the first one: "2026-12-01T09:00"
    count: int | None = None
    until: str | None = None  # a local date or date-time: "2027-12-31"
    business_day: str = "none"
    calendar: str | None = None

    @property
    def given(self) -> bool:
        return self.rrule is not None or self.every is not None


_EVERY = re.compile(
    r"\A\s*([0-9]{1,4})?\s*(d|days?|w|weeks?|mo|months?|y|years?)\s*\Z", re.IGNORECASE
)
_FREQ = {"d": "DAILY", "w": "WEEKLY", "m": "MONTHLY", "y": "YEARLY"}


def rule_of(calendar: Calendar, names: Names = PYTHON_NAMES) -> str:
    """The RRULE body a calendar request stands for (every, count and until folded in)."""
    if calendar.rrule is not None and calendar.every is not None:
        raise InvalidInput("rrule", f"give {names.rrule} or {names.every}, not both")
    if calendar.every is not None:
        match = _EVERY.match(calendar.every)
        if not match:
            raise InvalidInput(
                names.every_field,
                "expected an interval like '2 weeks', "
                f"'1 month', '3d' or 'year', got {calendar.every!r}",
            )
        n = int(match.group(1) or 1)
        if n < 1:
            raise InvalidInput(names.every_field, "the interval must be at least 1")
        rule = f"FREQ={_FREQ[match.group(2)[0].lower()]};INTERVAL={n}"
    else:
        rule = (calendar.rrule or "").strip().removeprefix("RRULE:")
    if calendar.count is not None:
        if isinstance(calendar.count, bool) or not isinstance(calendar.count, int):
            raise InvalidInput("count", "expected a whole number of occurrences")
        if not 1 <= calendar.count <= 100_000:
            raise InvalidInput("count", f"expected 1-100000, got {calendar.count}")
        rule += f";COUNT={calendar.count}"
    if calendar.until is not None:
        text = str(calendar.until).strip()
        try:
            until = datetime.fromisoformat(text) if text.isascii() else None
        except ValueError:
            until = None
        if until is None or until.tzinfo is not None:
            raise InvalidInput("until", f"expected a local date like 2027-12-31, got {text!r}")
        if len(text) <= 10:  # a date: through the end of that day
            until = until.replace(hour=23, minute=59, second=59)
        rule += f";UNTIL={until:%Y%m%dT%H%M%S}"
    return rule


def recurrence_of(calendar: Calendar, tz: str | None, now: datetime, names: Names) -> str:
    """A calendar request checked and made a stored Recurrence (JSON)."""
    from paysched.recurrence import parse_recurrence

    if calendar.start is None:
        raise InvalidInput(
            names.start_field,
            "a calendar rule needs its first local date and time of day, e.g. 2026-12-01T09:00",
        )
    rec = parse_recurrence(
        rule_of(calendar, names),
        calendar.start,
        tz or "UTC",
        calendar.business_day,
        calendar.calendar,
        field=names.rrule_field,
    )
    return rec.to_json()


def check_catchup(policy: str, window: timedelta | str | None, names: Names) -> timedelta | None:
    if policy not in CATCHUP_POLICIES:
        raise InvalidInput("catchup", f"expected all, latest or none, got {policy!r}")
    if window is None or window == "":
        return None
    value = _delay(window, names.window_field)
    if value <= timedelta(0):
        raise InvalidInput(names.window_field, "must be longer than zero")
    return value


def _given(value: object) -> bool:
    # The command line passes '' for an option typed empty: not given, as before. A Python
    # timedelta(0) is falsy but given ("now").
    return value is not None and value != ""


def check_schedule_choice(
    at: object,
    in_: object,
    cron: object,
    tz: object,
    names: Names = PYTHON_NAMES,
    rule: bool = False,
) -> None:
    """Exactly one of a due time, a delay, a cron expression or a calendar rule; a time zone
    only with cron or a rule."""
    if sum(_given(v) for v in (at, in_, cron, rule or None)) != 1:
        raise InvalidInput(
            "schedule",
            f"give exactly one of {names.at}, {names.in_}, {names.cron} or "
            f"{names.rrule} / {names.every}",
        )
    if _given(tz) and not _given(cron) and not rule:
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
            field,
            f"got the float {value!r}; pass a Decimal or a string such as '12.34' "
            "(floats cannot hold amounts of money exactly)",
        )
    kind = type(value).__name__
    raise InvalidInput(
        field, f"expected a Decimal or a string such as '12.34', got {kind} {shown(str(value))}"
    )


def payer_currency(get_account: Callable[[str], Account], payer: object, names: Names) -> str:
    """The currency of a payment that names none: its paying account's (InvalidInput naming
    the payer when there is no such account)."""
    if not isinstance(payer, str):
        raise InvalidInput(names.payer_field, f"expected a string, got {type(payer).__name__}")
    try:
        return get_account(normalise_name(payer, names.payer_field)).currency
    except NotFound as exc:
        raise InvalidInput(names.payer_field, str(exc)) from None


def payment_request(
    *,
    payer: str,
    payee: str,
    amount: str | Decimal,
    currency: str | None,
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
    calendar: Calendar | None = None,
    catchup: str = "all",
    catchup_window: timedelta | str | None = None,
    remind: timedelta | str | None = None,
    approval: str = "none",
    approval_timeout: timedelta | str | None = None,
    on_timeout: str | None = None,
) -> PaymentRequest:
    """Check a request to schedule a payment; InvalidInput naming the first bad field.

    `at` is an aware datetime or ISO-8601 text with an offset; `in_` a non-negative timedelta
    or a duration like '30s'. Whether the accounts exist, differ and hold `currency` is
    checked by the store when the payment is written (there, fields `from` and `to`). With
    no `currency`, the amount's decimals wait for `PaymentRequest.in_currency` (the payer's,
    looked up by the caller after every other check: `payer_currency`)."""
    calendar = calendar or Calendar()
    check_schedule_choice(at, in_, cron, tz, names, rule=calendar.given)
    for field, text in ((names.payer_field, payer), (names.payee_field, payee), ("memo", memo)):
        if not isinstance(text, str):
            raise InvalidInput(field, f"expected a string, got {type(text).__name__}")
    check_text(memo, "memo")
    written = amount_text(amount)
    code = None if currency is None else parse_currency(currency)
    minor = None if code is None else parse_positive_amount(written, code)
    if minor is None and amount_shape(written) <= 0:
        raise InvalidInput("amount", f"must be greater than zero, got {shown(written)}")
    if isinstance(notify, str):  # a bare string would be checked one character at a time
        raise InvalidInput("notify", f"expected a list of targets, got the string {notify!r}")
    targets = normalise_targets(list(notify or []), "notify", allow_private)
    if tz is not None:  # an empty zone is no zone, not UTC
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
    recurrence = recurrence_of(calendar, tz, now, names) if calendar.given else None
    window = check_catchup(catchup, catchup_window, names)
    wait, on_timeout = check_approval(approval, approval_timeout, on_timeout)
    return PaymentRequest(
        payer=payer,
        payee=payee,
        amount=minor,
        currency=code,
        due_at=due_at,
        cron=cron,
        timezone=tz,
        memo=memo,
        notify=tuple(targets),
        recurrence=recurrence,
        catchup=catchup,
        catchup_window=window,
        amount_text=written,
        remind=None if remind is None else parse_remind(remind, names.remind_field),
        approval=approval,
        approval_timeout=wait,
        approval_on_timeout=on_timeout,
    )


def parse_remind(value: object, field: str = "remind") -> timedelta:
    """How long before each occurrence its payer's chats are reminded: a duration like
    '24h' or a timedelta, more than zero and at most REMIND_MAX."""
    if isinstance(value, str):
        remind = parse_duration(value, field)
    elif isinstance(value, timedelta):
        remind = value
    else:
        raise InvalidInput(field, f"expected a duration like 24h or 90m, got {value!r}")
    if remind < timedelta(seconds=1):
        raise InvalidInput(field, f"must be at least 1s, got {value}")
    if remind > REMIND_MAX:
        raise InvalidInput(field, f"at most {REMIND_MAX.days}d, got {value}")
    return timedelta(seconds=int(remind.total_seconds()))  # stored in whole seconds


def parse_remind_setting(value: object, field: str = "remind") -> timedelta | None:
    """An account's reminder default: a duration as parse_remind takes, or 'off' (None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    return parse_remind(value, field)


def parse_approval_above(text: str | None, currency: str) -> int | None:
    """An account's approval rule: its new payments above this amount require approval.
    An amount in `currency` (its minor units), or None or 'off': no rule."""
    if text is None or text.strip().lower() == "off":
        return None
    return parse_amount(text, currency, "approval_above")


def check_approval(
    approval: str, timeout: timedelta | str | None, on_timeout: str | None
) -> tuple[timedelta | None, str | None]:
    """A payment's approval: `none` or `required`; a timeout (after the due time) and what
    an occurrence unanswered by then becomes (skip, the default, or fail). A timeout may be
    given without `required`: it applies if the payer's account requires approval above an
    amount (accounts' approval_above)."""
    if approval not in APPROVAL_POLICIES:
        raise InvalidInput("approval", f"expected none or required, got {shown(str(approval))}")
    if on_timeout == "":
        on_timeout = None
    if on_timeout is not None and on_timeout not in APPROVAL_TIMEOUT_OUTCOMES:
        raise InvalidInput("on_timeout", f"expected skip or fail, got {shown(str(on_timeout))}")
    if timeout is None or timeout == "":
        if on_timeout is not None:
            raise InvalidInput("on_timeout", "applies only with an approval timeout")
        return None, None
    value = _delay(timeout, "approval_timeout")
    if value < timedelta(seconds=1):
        raise InvalidInput("approval_timeout", "must be at least 1s")
    return value, on_timeout or "skip"


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
    "CLI_NAMES",
    "HTTP_NAMES",
    "PYTHON_NAMES",
    "Names",
    "PaymentRequest",
    "amount_text",
    "check_schedule_choice",
    "deposit_amount",
    "parse_remind",
    "parse_remind_setting",
    "payer_currency",
    "payment_request",
]
