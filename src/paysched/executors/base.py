"""The executor contract: what carries out one payment occurrence, and the four outcomes.

An executor receives a PaymentOrder: the payment to carry out (amount in minor units,
currency, payer, payee, memo, due time), which attempt this is, and the occurrence's
idempotency key, which is the same on every attempt, redelivery and restart. The contract
imports nothing of paysched's database: an executor needs none of it. It answers with one of
four outcomes:

- ``SUCCEEDED``: the money moved (``settled=True`` when the executor already recorded that in
  the database in the same transaction as the money, as the ledger does);
- ``DECLINED``: it will never succeed (insufficient funds, a provider's decline); ``reason``
  says why, and the occurrence fails at once;
- ``NOT_ATTEMPTED``: nothing reached the provider; retrying with the same key is safe;
- ``UNKNOWN``: the money may or may not have moved (a read timeout, a 5xx, a dropped
  connection, a provider's "pending"). paysched never guesses: it asks ``lookup`` later.

Executors may also raise: ``RetryableError`` counts as NOT_ATTEMPTED, ``PermanentError`` as
DECLINED; any other exception as UNKNOWN, because nobody can say what it left behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    """One attempt at one occurrence of a payment: what an executor carries out."""

    # The occurrence's key: the same on every attempt, redelivery and restart. Pass it to the
    # provider as its idempotency key, so that a retry after a crash can never pay twice.
    idempotency_key: str
    payment_id: int
    amount: int  # minor units of `currency` (format with paysched.domain.format_amount)
    currency: str  # ISO 4217
    payer: str  # account names
    payee: str
    memo: str
    due_at: datetime  # when this occurrence was due (timezone-aware UTC)
    attempt: int  # this attempt's number, from 1; a takeover of a stalled worker continues it
    # paysched's own hold on the occurrence in its database, for its ledger executor, which
    # moves the money in the same transaction as the occurrence's state. Opaque: no other
    # executor needs it (a wrapper passes the order on as it is).
    claim: object = field(default=None, repr=False, compare=False)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    NOT_ATTEMPTED = "not_attempted"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    outcome: Outcome
    reason: str | None = None
    # The provider's id for the payment (or the ledger's transfer id), shown in `show`.
    reference: str | None = None
    # SUCCEEDED only: the executor already moved the occurrence to succeeded, in the same
    # database transaction as the money (the ledger). The worker then records nothing more.
    settled: bool = False
    # The executor found the claim stale (another worker holds the occurrence): nothing done.
    fenced_out: bool = False

    @classmethod
    def succeeded(cls, reference: str | None = None, *, settled: bool = False) -> ExecutionResult:
        return cls(Outcome.SUCCEEDED, reference=reference, settled=settled)

    @classmethod
    def declined(cls, reason: str, reference: str | None = None) -> ExecutionResult:
        return cls(Outcome.DECLINED, reason=reason, reference=reference)

    @classmethod
    def not_attempted(cls, reason: str) -> ExecutionResult:
        return cls(Outcome.NOT_ATTEMPTED, reason=reason)

    @classmethod
    def unknown(cls, reason: str, reference: str | None = None) -> ExecutionResult:
        return cls(Outcome.UNKNOWN, reason=reason, reference=reference)


class Executor(Protocol):
    name: str

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        """Carry out the payment once for `order.idempotency_key`; stable across retries."""
        ...


@runtime_checkable
class Resolvable(Protocol):
    """An executor that can say, later, what became of a payment whose outcome was UNKNOWN."""

    async def lookup(self, order: PaymentOrder) -> ExecutionResult:
        """Ask the provider by `order.idempotency_key`. SUCCEEDED or DECLINED when it knows;
        NOT_ATTEMPTED when it never received the payment (safe to send again with the same
        key); UNKNOWN when it cannot tell yet (pending, unreachable)."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderCharge:
    """One charge as the provider lists it (paysched.reconcile compares them)."""

    key: str  # the occurrence key paysched sent as the charge's reference
    id: str  # the provider's id for the charge
    status: str  # succeeded | declined | pending (or whatever the provider says)
    amount: str  # a decimal string, as the provider wrote it
    currency: str
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class ChargePage:
    charges: list[ProviderCharge]
    next_cursor: str | None  # None: this was the last page


class ListingError(Exception):
    """The provider's listing failed: a reconciliation cannot go on without it."""


@runtime_checkable
class Listable(Protocol):
    """An executor whose provider can list its charges over a period (optional: reconcile
    without it checks only what lookups can, and says so)."""

    async def list_charges(
        self, created_from: datetime, created_to: datetime, cursor: str | None, limit: int
    ) -> ChargePage:
        """One page of the charges created in [created_from, created_to), oldest first;
        `cursor` is the previous page's next_cursor (None: the first page). ListingError
        when the provider cannot answer."""
        ...


@runtime_checkable
class Closable(Protocol):
    async def aclose(self) -> None: ...
