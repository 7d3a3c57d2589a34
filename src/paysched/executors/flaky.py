"""An executor wrapper that fails on purpose: the demo's and the tests' transient faults.

It wraps a real executor and raises RetryableError for the first `failures` attempts of the
payments it is told about, then lets the real executor run.
"""

from __future__ import annotations

from collections.abc import Callable

from paysched.errors import RetryableError
from paysched.executors.base import ExecutionResult, Executor, PaymentOrder


class FlakyExecutor:
    def __init__(self, inner: Executor, failures_for: Callable[[PaymentOrder], int]) -> None:
        self.name = f"flaky({inner.name})"
        self._inner = inner
        self._failures_for = failures_for

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        if order.attempt <= self._failures_for(order):
            raise RetryableError(f"provider timeout (injected, attempt {order.attempt})")
        return await self._inner.execute(order)


def memo_failures(order: PaymentOrder) -> int:
    """Transient failures requested in the payment memo as 'flaky:N'."""
    for word in order.memo.split():
        if word.startswith("flaky:") and word[6:].isdigit():
            return int(word[6:])
    return 0
