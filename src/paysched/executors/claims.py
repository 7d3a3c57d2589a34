"""Between the store and the executor contract: the PaymentOrder an executor is given, built
from the store's Claim, and the way back to the Claim for paysched's own ledger.

Also the adapter for executors written to the contract before PaymentOrder, whose
`execute(claim, idempotency_key)` (and `lookup`) took the store's Claim: they keep working,
with a warning in the log, until they take the order.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from paysched.db.store import Claim
from paysched.executors.base import ExecutionResult, PaymentOrder

log = logging.getLogger("paysched.executors")


def order_of(claim: Claim) -> PaymentOrder:
    payment, occurrence = claim.payment, claim.occurrence
    return PaymentOrder(
        idempotency_key=occurrence.key,
        payment_id=payment.id,
        amount=payment.amount,
        currency=payment.currency,
        payer=payment.payer,
        payee=payment.payee,
        memo=payment.memo,
        due_at=occurrence.due_at,
        attempt=claim.attempt,
        claim=claim,
    )


def claim_of(order: PaymentOrder) -> Claim:
    """The store's Claim behind an order paysched built (see PaymentOrder.claim)."""
    if not isinstance(order.claim, Claim):
        raise TypeError("this order was not built by paysched's worker: it holds no claim")
    return order.claim


def takes_claims(executor: Any) -> bool:
    """Whether `executor` was written to the old contract: `execute(claim, idempotency_key)`,
    two parameters where the current one takes the order alone."""
    try:
        parameters = inspect.signature(executor.execute).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in positional) == 2


class ClaimTakingExecutor:
    """An executor of the old contract behind the current one: it gets the Claim and the key
    as before. Resolvable only if it has a lookup (see adapted)."""

    def __init__(self, inner: Any) -> None:
        self.name: str = inner.name
        self._inner = inner
        if callable(getattr(inner, "list_charges", None)):  # takes no claim: as it is
            self.list_charges = inner.list_charges

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        result: ExecutionResult = await self._inner.execute(claim_of(order), order.idempotency_key)
        return result

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class ClaimTakingResolvable(ClaimTakingExecutor):
    async def lookup(self, order: PaymentOrder) -> ExecutionResult:
        result: ExecutionResult = await self._inner.lookup(claim_of(order), order.idempotency_key)
        return result


def adapted(executor: Any) -> Any:
    """`executor` as it is, or behind the adapter if it takes claims (said once, in the log)."""
    if not takes_claims(executor):
        return executor
    log.warning(
        "executor %s takes (claim, idempotency_key): that contract is deprecated; take one "
        "PaymentOrder (paysched.executors.base) in execute and lookup instead",
        executor.name,
    )
    if callable(getattr(executor, "lookup", None)):
        return ClaimTakingResolvable(executor)
    return ClaimTakingExecutor(executor)
