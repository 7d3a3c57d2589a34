"""The default executor: move the amount between paysched's own accounts.

The transfer and the occurrence's move to succeeded commit in one database transaction, so a
crash leaves all or nothing and a redelivered job can never move money twice.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from paysched.clock import Clock
from paysched.db.errors import described
from paysched.db.store import Claim, LostRace, Store
from paysched.errors import DatabaseError, DatabaseUnavailable, InfrastructureError, PermanentError
from paysched.executors.base import ExecutionResult, Outcome, PaymentOrder
from paysched.executors.claims import claim_of
from paysched.threads import GroupCommit


class LedgerExecutor:
    name = "ledger"

    def __init__(self, store: Store, clock: Clock, pool: ThreadPoolExecutor) -> None:
        # Concurrent payments settle in shared transactions (see GroupCommit); a permanent error
        # (insufficient funds ...) is returned for its own payment only.
        self._settles: GroupCommit[Claim, bool] = GroupCommit(
            pool, lambda claims: store.execution.settle_many(claims, clock.now())
        )

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        try:
            # The claim the order carries: the settle is fenced by it, and commits the
            # occurrence's move to succeeded with the money.
            settled = await self._settles.submit(claim_of(order))
        except PermanentError as exc:  # insufficient funds, an account gone: nothing moved
            return ExecutionResult.declined(str(exc))
        except (DatabaseUnavailable, DatabaseError, LostRace) as exc:
            # The settle transaction did not commit (or, if the connection died during COMMIT,
            # it did and the occurrence is already succeeded): either way nothing is left
            # half-done, and the payment is not to blame.
            raise InfrastructureError(described(exc)) from exc
        if not settled:
            return ExecutionResult(Outcome.SUCCEEDED, fenced_out=True)
        return ExecutionResult.succeeded(order.idempotency_key, settled=True)
