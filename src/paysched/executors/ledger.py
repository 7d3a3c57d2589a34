"""The default executor: move the amount between paysched's own accounts.

The transfer and the occurrence's move to succeeded commit in one database transaction, so a
crash leaves all or nothing and a redelivered job can never move money twice.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from paysched.clock import Clock
from paysched.db.store import Claim, Store
from paysched.executors.base import ExecutionResult
from paysched.threads import GroupCommit


class LedgerExecutor:
    name = "ledger"

    def __init__(self, store: Store, clock: Clock, pool: ThreadPoolExecutor) -> None:
        # Concurrent payments settle in shared transactions (see GroupCommit); a permanent error
        # (insufficient funds ...) is raised for its own payment only.
        self._settles: GroupCommit[Claim, bool] = GroupCommit(
            pool, lambda claims: store.settle_many(claims, clock.now())
        )

    async def execute(self, claim: Claim, idempotency_key: str) -> ExecutionResult:
        settled = await self._settles.submit(claim)
        return ExecutionResult(settled=settled, fenced_out=not settled, reference=idempotency_key)
