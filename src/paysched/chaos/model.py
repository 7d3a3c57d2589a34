"""What the harness planned and did, as the invariants read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from paysched.domain import Occurrence, Transition

# The message of the database errors the chaos workers inject (see node.inject_db_errors).
INJECTED_DB_ERROR = "injected database error"
DB_ERROR_LOG_LINE = "injecting a database error"  # what a worker logs as it injects one
BROKE = "broke"  # the payer whose payments mostly fail permanently: insufficient funds


@dataclass(frozen=True)
class PlannedPayment:
    id: int
    payer: str
    payee: str
    amount: int  # minor units
    due_at: datetime  # the first due time of a recurring one
    cron: str | None = None
    catchup: str = "all"  # all | latest | none: what runs of what fell due while paused
    approval: bool = False  # created requiring approval (the harness's approver decides)


@dataclass
class CancelRecord:
    payment_id: int
    committed_at: datetime  # read after the cancel returned: at or after its commit
    target: str  # what it raced (see cancels.TARGETS)
    cancelled: list[int]  # occurrence ids the cancel moved to cancelled
    in_flight: list[int]  # executing or being resolved: left to finish
    # occurrence id -> the occurrence, read back right after the commit; None if that read
    # failed
    snapshot: dict[int, Occurrence] | None = None


@dataclass
class PauseRecord:
    """One pause of a recurring payment by the harness, and the resume that ended it."""

    payment_id: int
    paused_at: datetime  # read right after the pause returned: at or after its commit
    held: list[int]  # not-started occurrence ids the pause held
    # Read right before the resume call that succeeded, and passed to it as its `now`: at or
    # before the resume's commit, and the instant its catch-up measured lateness from.
    resume_called_at: datetime | None = None
    resumed_at: datetime | None = None  # read right after the resume returned
    missed: list[int] = field(default_factory=list)  # marked missed by that resume
    # resumed | resumed at drain | cancelled while paused | paused (never resumed: a violation)
    outcome: str = "paused"
    # The payment's transitions read before the first resume call: all committed while it was
    # paused or before (None if that read failed; pause_holds then skips this record).
    before_resume: list[Transition] | None = None


@dataclass(frozen=True)
class SkipRecord:
    """One skip of a recurring payment's next occurrence by the harness."""

    payment_id: int
    occurrence_id: int  # the occurrence the skip moved to skipped (or created skipped)
    committed_at: datetime  # read right after the skip returned: at or after its commit


@dataclass
class ProviderView:
    """The stand-in provider's ledger at the end of the run (GET /_charges, /_accounts)."""

    charges: list[dict[str, Any]]
    balances: dict[str, Decimal | None]
    initial: dict[str, Decimal]  # balances given at the start
    drawn: dict[str, int] = field(default_factory=dict)  # fault modes that hit requests


@dataclass
class ApprovalRecord:
    """One decision of the harness's approver on an occurrence awaiting approval."""

    occurrence_id: int
    approve: bool
    committed_at: datetime  # read after the decision returned
    twice: bool = False  # the approver tried to decide it a second time at once
    again_refused: bool = False  # and that second decision was refused (409)
    again_accepted: bool = False  # or taken: a decision made twice (a violation)
