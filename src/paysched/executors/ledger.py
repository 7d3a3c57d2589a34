"""The default executor: move the amount between paysched's own accounts.

The transfer and the occurrence's move to succeeded commit in one database transaction, so a
crash leaves all or nothing and a redelivered job can never move money twice.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from paysched.clock import Clock
from paysched.db.store import Claim, Store
from paysched.executors.base import ExecutionResult


class LedgerExecutor:
    name = "ledger"

    def __init__(self, store: Store, clock: Clock, pool: ThreadPoolExecutor) -> None:
        self._store = store
        self._clock = clock
        self._pool = pool

    async def execute(self, claim: Claim, idempotency_key: str) -> ExecutionResult:
        loop = asyncio.get_running_loop()
        settled = await loop.run_in_executor(
            self._pool, self._store.settle_transfer, claim, self._clock.now()
        )
        return ExecutionResult(settled=settled, fenced_out=not settled, reference=idempotency_key)
