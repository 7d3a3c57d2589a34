"""The repository: the only code that issues SQL for payments, occurrences and the ledger.

`Store` is one object made of small named parts, each in its own module, each holding the one
`Database` (base: the engine, read connections, the schema, the deployment id) and nothing of
the others:

- `store.accounts` (accounts): accounts and the double-entry ledger, deposits, its checks;
- `store.payments` (payments): creating payments, materializing their occurrences with the
  catch-up policy, marking them queued; `approval_outbox` is set on it;
- `store.control` (control): a person's cancel, pause, resume and skips, what comes next;
- `store.approvals` (approvals): deciding occurrences awaiting approval, the timeout;
- `store.reminders` (reminders): the reminder sweep;
- `store.execution` (execution): claims, settles, finishes, unknown outcomes;
- `store.reads` (reads): read models of occurrences, their history and counts;
- `store.finds` (finds): search and filters of payments, an account's ledger;
- `store.exports` (exports): a period's rows page by page, an account's statement.

What more than one part needs is a function on a connection, not an inherited method
(`accounts.account_named`, `payments.read_payment`, `lock_payment`, `set_payment_state`,
`catch_up`, `base.enqueue_notifications`), and every state change goes through `transitions`
(the one compare-and-set). The database as a whole (`engine`, `dialect`, `migrate`,
`ensure_schema`, `schema_revision`, `ping`, `close`, `deployment_id`) is on `Store` itself.
Methods are synchronous and short; async callers run them on the database threads.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from paysched.db.engine import make_engine
from paysched.db.store.accounts import Accounts, LedgerReport
from paysched.db.store.approvals import Approvals
from paysched.db.store.base import Database, LostRace
from paysched.db.store.control import CancelResult, Control
from paysched.db.store.execution import Claim, Execution, Finish, NoClaim
from paysched.db.store.exports import Exports
from paysched.db.store.finds import Finds
from paysched.db.store.payments import LATE_AFTER, Payments
from paysched.db.store.reads import Reads
from paysched.db.store.reminders import Reminders

__all__ = [
    "CancelResult",
    "Claim",
    "Database",
    "Finish",
    "LedgerReport",
    "LostRace",
    "NoClaim",
    "Store",
]


class Store:
    """The database and its parts (see the module's docstring for which part owns what)."""

    def __init__(self, engine: Engine, late_after: timedelta = LATE_AFTER) -> None:
        """`late_after`: see payments.LATE_AFTER (Settings.catchup_late_after); a resume
        (control) and a materialize (payments) apply the same."""
        self.database = Database(engine)
        self.engine = engine
        self.accounts = Accounts(self.database)
        self.payments = Payments(self.database, late_after)
        self.control = Control(self.database, late_after)
        self.approvals = Approvals(self.database)
        self.reminders = Reminders(self.database)
        self.execution = Execution(self.database)
        self.reads = Reads(self.database)
        self.finds = Finds(self.database)
        self.exports = Exports(self.database)

    @classmethod
    def connect(cls, url: str, pool_size: int = 10, late_after: timedelta = LATE_AFTER) -> Store:
        return cls(make_engine(url, pool_size=pool_size), late_after=late_after)

    # The database as a whole (see Database).
    @property
    def dialect(self) -> str:
        return self.database.dialect

    def migrate(self) -> None:
        self.database.migrate()

    def schema_revision(self) -> str | None:
        return self.database.schema_revision()

    def ensure_schema(self, *, migrate: bool = True) -> tuple[str | None, str | None]:
        return self.database.ensure_schema(migrate=migrate)

    def ping(self) -> None:
        self.database.ping()

    def close(self) -> None:
        self.database.close()

    def deployment_id(self) -> str:
        return self.database.deployment_id()
