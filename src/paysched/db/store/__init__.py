"""The repository: the only code that issues SQL for payments, occurrences and the ledger.

One module per concern — `accounts` (accounts and the ledger), `payments` (creating payments
and materializing their occurrences, catch-up), `control` (a person's cancel, pause, resume
and skips), `approvals` (deciding occurrences awaiting approval, the approval timeout),
`reminders` (the reminder sweep), `execution` (claims, settles, finishes, unknown outcomes),
`reads` (read models), `finds` (search and filters of payments, an account's ledger),
`exports` (a period's rows page by page, an account's statement) — over
`base` (engine, dialect helpers) and `transitions` (the one compare-and-set every state change
goes through). `Store` puts them together so callers hold
one object. Methods are synchronous and short; async callers run them on the database threads.
"""

from __future__ import annotations

from datetime import timedelta

from paysched.db.engine import make_engine
from paysched.db.store.accounts import LedgerReport
from paysched.db.store.approvals import ApprovalsStore
from paysched.db.store.base import LostRace
from paysched.db.store.control import CancelResult
from paysched.db.store.execution import Claim, ExecutionStore, Finish, NoClaim
from paysched.db.store.exports import ExportsStore
from paysched.db.store.finds import FindsStore
from paysched.db.store.payments import LATE_AFTER
from paysched.db.store.reads import ReadsStore
from paysched.db.store.reminders import RemindersStore

__all__ = ["CancelResult", "Claim", "Finish", "LedgerReport", "LostRace", "NoClaim", "Store"]


class Store(ExecutionStore, ApprovalsStore, RemindersStore, ReadsStore, FindsStore, ExportsStore):
    @classmethod
    def connect(cls, url: str, pool_size: int = 10, late_after: timedelta = LATE_AFTER) -> Store:
        """`late_after`: see PaymentsStore (Settings.catchup_late_after)."""
        return cls(make_engine(url, pool_size=pool_size), late_after=late_after)
