"""Payments, occurrences, their states and allowed transitions, and money in minor units."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from paysched.errors import InvalidInput


class OccurrenceState(StrEnum):
    SCHEDULED = "scheduled"  # created in the database, not yet confirmed in the queue
    QUEUED = "queued"  # a queue job exists (or is being re-created by reconcile)
    EXECUTING = "executing"  # a worker holds it; `fence` says which claim is current
    RETRYING = "retrying"  # a retryable error happened; the queue will redeliver after backoff
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


S = OccurrenceState
FINAL_STATES: frozenset[OccurrenceState] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.SKIPPED}
)
PENDING_STATES: frozenset[OccurrenceState] = frozenset(
    {S.SCHEDULED, S.QUEUED, S.EXECUTING, S.RETRYING}
)

# executing -> executing is a takeover: the worker that held the job died or stalled, the queue
# redelivered it, and the new claim bumps the fence so the old worker can no longer settle.
ALLOWED_TRANSITIONS: dict[OccurrenceState, frozenset[OccurrenceState]] = {
    S.SCHEDULED: frozenset({S.QUEUED, S.EXECUTING, S.CANCELLED, S.SKIPPED}),
    S.QUEUED: frozenset({S.EXECUTING, S.CANCELLED, S.SKIPPED}),
    S.EXECUTING: frozenset(
        {S.EXECUTING, S.SUCCEEDED, S.RETRYING, S.FAILED, S.CANCELLED, S.SKIPPED}
    ),
    S.RETRYING: frozenset({S.EXECUTING, S.CANCELLED, S.SKIPPED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
}

CLAIMABLE_STATES: frozenset[OccurrenceState] = frozenset(
    s for s, targets in ALLOWED_TRANSITIONS.items() if S.EXECUTING in targets
)


def can_transition(source: OccurrenceState, target: OccurrenceState) -> bool:
    return target in ALLOWED_TRANSITIONS[source]


def sources_of(target: OccurrenceState) -> frozenset[OccurrenceState]:
    """Every state from which `target` may be entered (the WHERE clause of a compare-and-set)."""
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)


class PaymentState(StrEnum):
    ACTIVE = "active"  # more occurrences may come
    # Every occurrence has been created (a one-time payment once its one exists); what became
    # of them is in their own states, summarised by views.payment_status.
    DONE = "done"
    CANCELLED = "cancelled"


# ---------------------------------------------------------------------------------------------
# Money: integer minor units, never float.

_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# ISO 4217 exponents that differ from 2; every other code uses 2 decimals.
_EXPONENTS = {
    "BHD": 3, "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0,
    "KMF": 0, "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "RWF": 0, "TND": 3, "UGX": 0,
    "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}  # fmt: skip


def parse_currency(code: str, field: str = "currency") -> str:
    value = code.strip().upper()
    if not _CURRENCY_RE.match(value):
        raise InvalidInput(field, f"expected a 3-letter ISO 4217 code like USD, got {code!r}")
    return value


def currency_exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def parse_amount(text: str, currency: str, field: str = "amount") -> int:
    """'12.34' in USD -> 1234 minor units. Rejects floats' artefacts, signs and extra decimals."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise InvalidInput(field, f"expected a decimal number like 12.34, got {text!r}") from None
    if not value.is_finite():
        raise InvalidInput(field, f"expected a finite number, got {text!r}")
    exponent = currency_exponent(currency)
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise InvalidInput(field, f"{text!r} has more than {exponent} decimals for {currency}")
    return int(minor)


def parse_positive_amount(text: str, currency: str, field: str = "amount") -> int:
    minor = parse_amount(text, currency, field)
    if minor <= 0:
        raise InvalidInput(field, f"must be greater than zero, got {text!r}")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """1234, USD -> '12.34' (a decimal string, exact)."""
    exponent = currency_exponent(currency)
    return str(Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    currency: str
    balance: int  # minor units


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


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A notification to commit together with the state change that causes it."""

    dedup_key: str  # one per event and target; receivers may dedup on it too
    payment_id: int
    occurrence_id: int | None
    event: str  # succeeded | failed | retrying
    channel: str  # telegram | webhook | log
    target: str
    payload: str  # JSON


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    dedup_key: str
    payment_id: int
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
