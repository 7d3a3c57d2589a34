"""Your own payment code as a paysched executor: `PAYSCHED_EXECUTOR=custom_executor:make_executor`
(with this directory on PYTHONPATH).

The seed design called `executePayment(payment)` and retried whatever it threw. paysched needs
one more thing from you: whether money may have moved. Answer with an ExecutionResult, or
raise RetryableError when nothing reached your provider (safe to retry with the same key) and
PermanentError when it never will succeed; any other exception counts as UNKNOWN, and since
this executor has no `lookup`, such a payment waits for a person (`paysched resolve`).
"""

from __future__ import annotations

from paysched.config import Settings
from paysched.domain import format_amount
from paysched.errors import PermanentError, RetryableError
from paysched.executors.base import ExecutionResult, PaymentOrder


class BankTransferExecutor:
    name = "bank-transfer"

    def __init__(self, daily_limit_minor: int) -> None:
        self.daily_limit_minor = daily_limit_minor
        self.sent: dict[str, str] = {}  # idempotency key -> our reference

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        if order.amount > self.daily_limit_minor:
            raise PermanentError(f"over the daily limit of {self.daily_limit_minor} minor units")
        if "offline" in order.memo:
            raise RetryableError("bank API unreachable (nothing was sent)")
        # A real executor calls its bank here, passing order.idempotency_key so that a retry
        # after a crash can never pay twice.
        key = order.idempotency_key
        reference = self.sent.setdefault(key, f"bt-{len(self.sent) + 1}")
        amount = format_amount(order.amount, order.currency)
        print(f"paid {amount} {order.currency} {order.payer} -> {order.payee}: {reference}")
        return ExecutionResult.succeeded(reference)


def make_executor(settings: Settings) -> BankTransferExecutor:
    """The factory paysched calls once per process, with its settings."""
    return BankTransferExecutor(daily_limit_minor=1_000_000)
