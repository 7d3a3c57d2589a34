"""Payments, occurrences, their states and allowed transitions, and money in minor units."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from paysched.errors import InvalidInput


class OccurrenceState(StrEnum):
    SCHEDULED = "scheduled"  # created in the database, not yet confirmed in the queue
    QUEUED = "queued"  # a queue job exists (or is being re-created by reconcile)
    EXECUTING = "executing"  # a worker holds it; `fence` says which claim is current
    RETRYING = "retrying"  # nothing moved; the queue will redeliver after backoff
    # The executor could not tell whether money moved (timeout, 5xx, dropped connection,
    # "pending"): the resolver asks the provider by idempotency key until it knows.
    UNKNOWN = "unknown"
    NEEDS_REVIEW = "needs_review"  # still unknown after the resolve window: a person decides
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A person skipped it (skip-next). Pausing a payment skips nothing: its not-started
    # occurrences are held as they are, and resuming runs them or marks them missed.
    SKIPPED = "skipped"
    # Fell due while paysched was down or the payment paused, and the payment's catch-up
    # policy (latest / none, or its window) says not to run it late.
    MISSED = "missed"
    # Its payment requires approval: never claimed until a person other than the payment's
    # creator approves it (then scheduled), rejects it, or its approval timeout passes.
    AWAITING_APPROVAL = "awaiting_approval"


S = OccurrenceState
FINAL_STATES: frozenset[OccurrenceState] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.SKIPPED, S.MISSED}
)
# Owned by the queue: reconcile re-enqueues any of these whose job Redis lost.
PENDING_STATES: frozenset[OccurrenceState] = frozenset(
    {S.SCHEDULED, S.QUEUED, S.EXECUTING, S.RETRYING}
)
# Owned by the resolver (unknown) or a person (needs_review); never re-enqueued blindly.
UNRESOLVED_STATES: frozenset[OccurrenceState] = frozenset({S.UNKNOWN, S.NEEDS_REVIEW})
# What a cancel still stops: nothing of these has started, or the last attempt moved nothing.
CANCELLABLE_STATES: frozenset[OccurrenceState] = frozenset(
    {S.SCHEDULED, S.QUEUED, S.RETRYING, S.AWAITING_APPROVAL}
)

# executing -> executing is a takeover: the worker that held the job died or stalled, the queue
# redelivered it, and the new claim bumps the fence so the old worker can no longer settle.
# Nothing executing or unknown can be cancelled or skipped: money may be on its way.
ALLOWED_TRANSITIONS: dict[OccurrenceState, frozenset[OccurrenceState]] = {
    S.SCHEDULED: frozenset({S.QUEUED, S.EXECUTING, S.CANCELLED, S.SKIPPED, S.MISSED}),
    S.QUEUED: frozenset({S.EXECUTING, S.CANCELLED, S.SKIPPED, S.MISSED}),
    S.EXECUTING: frozenset(
        {S.EXECUTING, S.SUCCEEDED, S.RETRYING, S.FAILED, S.UNKNOWN, S.NEEDS_REVIEW}
    ),
    S.RETRYING: frozenset({S.EXECUTING, S.CANCELLED, S.SKIPPED}),
    S.UNKNOWN: frozenset({S.SUCCEEDED, S.FAILED, S.QUEUED, S.NEEDS_REVIEW}),
    S.NEEDS_REVIEW: frozenset({S.SUCCEEDED, S.FAILED, S.QUEUED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
    S.MISSED: frozenset(),
    # approved -> scheduled (enqueued as a materialized one is); rejected -> cancelled; the
    # approval timeout -> skipped or failed; skipped by a person; missed by catch-up.
    S.AWAITING_APPROVAL: frozenset({S.SCHEDULED, S.CANCELLED, S.SKIPPED, S.FAILED, S.MISSED}),
}


def can_transition(source: OccurrenceState, target: OccurrenceState) -> bool:
    return target in ALLOWED_TRANSITIONS[source]


def may_have_reached_provider(occ: Occurrence) -> bool:
    """An earlier request of the occurrence's current attempt may have reached the provider:
    a worker it was taken over from sent it and stalled or died, and nobody has asked the
    provider since (a lookup or a person's decision that sends it again clears `takeovers`).
    Such an occurrence is never cancelled, skipped or given up on blindly: the provider may
    have charged it, and only a lookup (or a retry under the same key) can tell."""
    return occ.takeovers > 0


def never_claimed(occ: Occurrence) -> bool:
    """No worker has claimed it: nothing of it was ever sent. One queued again after an
    attempt (an unknown outcome the provider never received, a person's retry) was claimed:
    it has begun, and a skip from a reminder is too late for it."""
    return occ.attempts == 0 and occ.started_at is None


def cancellable(occ: Occurrence) -> bool:
    """A cancel stops it: nothing of it has started, or its last attempt moved nothing and no
    earlier request of it may still have reached the provider."""
    return occ.state in CANCELLABLE_STATES and not (
        occ.state == S.RETRYING and may_have_reached_provider(occ)
    )


# What a recurring payment runs of the occurrences that fell due while paysched was down or
# the payment paused: all of them, the latest only, or none (they are recorded as missed).
CATCHUP_POLICIES = ("all", "latest", "none")
# Whether a payment's occurrences wait for a person's approval; what an unanswered one becomes.
APPROVAL_POLICIES = ("none", "required")
APPROVAL_TIMEOUT_OUTCOMES = ("skip", "fail")


class PaymentState(StrEnum):
    ACTIVE = "active"  # more occurrences may come
    # Nothing of it runs until it is resumed: no occurrence is created, none is claimed; what
    # fell due meanwhile is then run or missed by its catch-up policy.
    PAUSED = "paused"
    # Every occurrence has been created (a one-time payment once its one exists); what became
    # of them is in their own states, summarised by views.payment_status.
    DONE = "done"
    CANCELLED = "cancelled"


def payment_state_filter(value: str | None) -> str | None:
    """A payment list's `state` filter: None (all) or one of the states, named in the error."""
    if value is not None and value not in PAYMENT_STATE_NAMES:
        raise InvalidInput("state", f"expected {', '.join(PAYMENT_STATE_NAMES)}, got {value!r}")
    return value


PAYMENT_STATE_NAMES = tuple(s.value for s in PaymentState)


# ---------------------------------------------------------------------------------------------
# Money: integer minor units, never float.

_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def _exponent(code: str) -> int | None:
    """The ISO 4217 exponent of `code` (None: no minor unit); ValueError if not a code.

    iso4217 is imported on first use: building its enum of every currency costs ~60 ms, which
    a command that never handles an amount (`paysched stats`) should not pay."""
    from iso4217 import Currency

    exponent = Currency(code).exponent
    return None if exponent is None else int(exponent)


def parse_currency(code: str, field: str = "currency") -> str:
    """An active ISO 4217 currency that has minor units (not a metal or a fund code)."""
    value = code.strip().upper()
    if not _CURRENCY_RE.match(value):
        raise InvalidInput(field, f"expected a 3-letter ISO 4217 code like USD, got {code!r}")
    try:
        exponent = _exponent(value)
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not an ISO 4217 currency code") from None
    if exponent is None:
        raise InvalidInput(field, f"{value} has no minor unit; it cannot be paid in")
    return value


@functools.cache
def currency_exponent(currency: str) -> int:
    """Decimals of the currency's minor unit (ISO 4217): USD 2, JPY 0, BHD 3."""
    try:
        exponent = _exponent(currency)
    except ValueError:
        raise InvalidInput("currency", f"{currency!r} is not an ISO 4217 currency code") from None
    if exponent is None:
        raise InvalidInput("currency", f"{currency} has no minor unit; it cannot be paid in")
    return int(exponent)


# Limits, in minor units. No balance plus amount can overflow a signed 64-bit column
# (9.2e18) on either database, and neither can the external account of a currency, which
# holds minus everything ever deposited in it.
MAX_AMOUNT = 10**15  # one payment or deposit: 10 trillion USD
MAX_BALANCE = 10**17  # any account's balance
MAX_ISSUED = 10**18  # all deposits in one currency
# Database ids are 32-bit on PostgreSQL: a larger one cannot exist (and must not reach SQL).
MAX_ID = 2**31 - 1
# ASCII digits only (str.isdigit() also accepts "١٢٣"), no exponent, no plus sign. A minus is
# read, so that "-5" is told it must be greater than zero rather than that it is no number.
_AMOUNT = re.compile(r"\A-?[0-9]{1,20}(?:\.[0-9]{1,20})?\Z")
_ID = re.compile(r"\A[0-9]{1,12}\Z")
# What stored free text (a memo, a reason) may not hold: NUL, which PostgreSQL refuses in text
# (SQLite stored it), lone surrogates, which no UTF-8 encodes, and the other control characters
# (they hide or fake what a message shows). Tabs and line breaks are text.
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def shown(text: str, limit: int = 40) -> str:
    """A user's input, quoted for an error message, cut short if long."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_amount(text: str, currency: str, field: str = "amount") -> int:
    """'12.34' in USD -> 1234 minor units: ASCII digits and one dot, at most the currency's
    decimals as written ('1.0000' is refused for USD, like '1.0001': a client that writes
    more decimals than the currency has is confused about the currency), at most MAX_AMOUNT.
    Floats' artefacts and exponents are refused, not rounded."""
    raw = text.strip() if isinstance(text, str) else ""
    value = amount_shape(text, field)
    exponent = currency_exponent(currency)
    written = value.as_tuple().exponent  # -4 for '1.0000'; amount_shape's numbers are finite
    if isinstance(written, int) and -written > exponent:
        raise InvalidInput(field, f"{shown(raw)} has more than {exponent} decimals for {currency}")
    minor = value.scaleb(exponent)
    if abs(minor) > MAX_AMOUNT:
        limit = format_amount(MAX_AMOUNT, currency)
        raise InvalidInput(field, f"at most {limit} {currency}, got {shown(raw)}")
    return int(minor)


def amount_shape(text: str, field: str = "amount") -> Decimal:
    """An amount's number, its shape checked (ASCII digits and one dot), before its currency
    is known: the decimals and the limit are the currency's (`parse_amount`)."""
    raw = text.strip() if isinstance(text, str) else ""
    if not _AMOUNT.match(raw):
        raise InvalidInput(field, f"expected a decimal number like 12.34, got {shown(str(text))}")
    return Decimal(raw)


def parse_positive_amount(text: str, currency: str, field: str = "amount") -> int:
    minor = parse_amount(text, currency, field)
    if minor <= 0:
        raise InvalidInput(field, f"must be greater than zero, got {shown(text)}")
    return minor


def parse_id(text: str, field: str = "id") -> int:
    """A positive id in ASCII digits; InvalidInput otherwise. One above MAX_ID is valid input
    that names nothing (the caller's lookup says 'not found' without asking the database)."""
    raw = text.strip()
    if not _ID.match(raw) or int(raw) <= 0:
        raise InvalidInput(field, f"expected a positive integer id, got {shown(text)}")
    return int(raw)


def check_text(text: str, field: str) -> str:
    """Free text as it is to be stored, the same on SQLite and PostgreSQL; InvalidInput naming
    `field` and the first character it may not hold."""
    bad = _UNSTORABLE.search(text)
    if bad is not None:
        char = f"U+{ord(bad.group()):04X} at {bad.start()}"
        raise InvalidInput(
            field, f"must be text without NUL, control characters or lone surrogates, got {char}"
        )
    return text


def looks_external(name: str) -> bool:
    """Starts with '@' once compatibility look-alikes are folded (NFKC): the full-width
    (U+FF20) and small (U+FE6B) commercial at read as '@' to a person, so they may not
    pass for an external account."""
    return unicodedata.normalize("NFKC", name).strip().startswith("@")


def refuse_external(name: str, field: str = "name") -> None:
    """Names starting with '@' are paysched's external accounts: not for deposits or payments."""
    if looks_external(name):
        raise InvalidInput(field, f"{name.strip()!r} is an external account; use a user's account")


def normalise_name(name: str, field: str = "name") -> str:
    """An account name as stored and looked up: NFC, trimmed, printable, 1-100 characters.
    'zoé' typed either way is one account; a name with a newline or an escape is refused."""
    value = unicodedata.normalize("NFC", name).strip()
    if not value or len(value) > 100:
        raise InvalidInput(field, "must be 1-100 characters (after trimming spaces)")
    if not value.isprintable():
        raise InvalidInput(
            field, f"must be printable text without control characters, got {shown(value)}"
        )
    return value


# A name is one segment of /v1/accounts/{name} and one argument of the CLI: these would end
# the segment, start a query or fragment, or read as percent-encoding (or as '/' in browsers).
_URL_BREAKING = "/\\?#%"


def new_account_name(name: str, field: str = "name") -> str:
    """A name a new account may take: normalise_name's, not external-looking, and usable
    as it is in a URL path. Lookups stay with normalise_name, so older names still answer."""
    value = normalise_name(name, field)
    if looks_external(value):
        raise InvalidInput(
            field, "must not start with '@' or a look-alike of it (kept for external accounts)"
        )
    if any(ch in value for ch in _URL_BREAKING) or value in (".", ".."):
        raise InvalidInput(
            field, f"must not be '.' or '..' or contain / \\ ? # %, got {shown(value)}"
        )
    return value


def format_amount(minor: int, currency: str) -> str:
    """1234, USD -> '12.34' (a decimal string, exact)."""
    exponent = currency_exponent(currency)
    return str(Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


def payment_summary(payment_id: int, amount: int, currency: str, payer: str, payee: str) -> str:
    """One line a person reading the queue (Bull Board, redis-cli) tells payments apart by:
    "payment #12: 12.34 EUR alice → bob". Deliberately not the memo (free text that may name a
    person or carry an invoice's details) nor the notification targets (chat ids, webhook URLs)."""
    return f"payment #{payment_id}: {format_amount(amount, currency)} {currency} {payer} → {payee}"


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    currency: str
    balance: int  # minor units
    # The reminder default of the payments it pays (copied into each at its creation).
    remind: timedelta | None = None
    # Its payments above this amount (minor units) require approval; None: none do.
    approval_above: int | None = None


@dataclass(frozen=True, slots=True)
class Payment:
    id: int
    payer: str
    payee: str
    amount: int  # minor units
    currency: str
    state: PaymentState
    due_at: datetime | None  # one-time payments
    cron: str | None  # recurring payments
    timezone: str | None
    next_due_at: datetime | None
    memo: str
    created_at: datetime
    notify: tuple[str, ...] = ()  # targets: "telegram:CHAT", "webhook:URL", "log"
    recurrence: str | None = None  # paysched.recurrence.Recurrence as JSON
    catchup: str = "all"  # all | latest | none
    catchup_window: timedelta | None = None
    next_nominal_at: datetime | None = None
    # The payer's linked chats are reminded this long before each occurrence falls due.
    remind: timedelta | None = None
    # Each occurrence waits for a person's approval (`required`) before it may be claimed;
    # unanswered for approval_timeout after its due time, it is skipped or failed.
    approval: str = "none"
    approval_timeout: timedelta | None = None
    approval_on_timeout: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A notification to commit together with the state change that causes it."""

    dedup_key: str  # one per event and target; receivers may dedup on it too
    payment_id: int | None  # None: an event of no one payment (a reconciliation)
    occurrence_id: int | None
    event: str  # succeeded | failed | retrying | ... | reconciliation
    channel: str  # telegram | webhook | log
    target: str
    payload: str  # JSON


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    dedup_key: str
    payment_id: int | None
    occurrence_id: int | None
    event: str
    channel: str
    target: str
    payload: str
    state: str  # pending | sent | dead
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class Occurrence:
    id: int
    payment_id: int
    key: str
    due_at: datetime
    state: OccurrenceState
    attempts: int
    fence: int
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    # Claims that took the occurrence over from a worker that died or stalled.
    takeovers: int = 0
    # The provider's id for the payment, once an executor reported one.
    reference: str | None = None
    # UNKNOWN only: when the resolver asks the provider next, and how often it has asked.
    resolve_at: datetime | None = None
    resolve_checks: int = 0
    # Set when a business-day rule moved due_at off the rule's own instant (the key's).
    nominal_at: datetime | None = None
    # AWAITING_APPROVAL only: when it is skipped or failed unanswered (None: never).
    approval_deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    occurrence_id: int
    at: datetime
    from_state: OccurrenceState | None
    to_state: OccurrenceState
    attempt: int
    reason: str | None


def occurrence_key(payment_id: int, due_at_ms: int) -> str:
    """Payment id + due time: the queue job id and the executor's idempotency key."""
    return f"pay-{payment_id}-{due_at_ms}"
