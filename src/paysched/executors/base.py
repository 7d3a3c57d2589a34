"""The executor protocol.

An executor receives the claim (occurrence, payment, fence) and its idempotency key, and either
settles the occurrence itself (the ledger does, atomically) or reports the outcome so the worker
marks it succeeded. It raises RetryableError or PermanentError (paysched.errors) on failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from paysched.db.store import Claim


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    # True when the executor already moved the occurrence to succeeded in its own transaction.
    settled: bool
    # False when the executor found the claim stale (another worker holds the occurrence).
    fenced_out: bool = False
    reference: str | None = None


class Executor(Protocol):
    name: str

    async def execute(self, claim: Claim, idempotency_key: str) -> ExecutionResult:
        """Carry out the payment once for `idempotency_key`; stable across retries."""
        ...
