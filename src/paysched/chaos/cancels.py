"""Cancels issued at random moments of a chaos run, and what each one saw when it committed.

A cancel picks its payment by what it should race: the one-time payment falling due right now
(its claim), the one entering the scheduler's look-ahead right now (its materialize), a
recurring payment (mid-series), or any later one. It goes through the store, from its own
connection, exactly as `paysched cancel` does, while the workers and schedulers run.

Right after the cancel commits, the payment's occurrences are read back: that snapshot is what
the `cancel_wins` invariant holds the end state to.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from paysched.chaos.model import CancelRecord, PlannedPayment
from paysched.db.store import Store
from paysched.domain import Occurrence
from paysched.errors import Conflict

# What a cancel races, by `pick % 4`.
TARGETS = ("claim", "materialize", "recurring", "later")


class Canceller:
    def __init__(
        self, store: Store, payments: list[PlannedPayment], lookahead_s: float, seed: int
    ) -> None:
        self.store = store
        self.payments = payments
        self.lookahead = timedelta(seconds=lookahead_s)
        self.rng = random.Random(f"cancels-{seed}")
        self.records: list[CancelRecord] = []
        self._done: set[int] = set()

    def cancelled_ids(self) -> set[int]:
        return {r.payment_id for r in self.records}

    def _choose(self, target: str, now: datetime) -> PlannedPayment | None:
        open_ = [p for p in self.payments if p.id not in self._done]
        one_time = [p for p in open_ if p.cron is None]
        if target == "recurring":
            recurring = [p for p in open_ if p.cron is not None]
            return self.rng.choice(recurring) if recurring else None
        if target == "later":
            later = [p for p in one_time if p.due_at > now + self.lookahead]
            return self.rng.choice(later) if later else None
        # The next one to fall due (its claim is moments away), or the next one to enter the
        # scheduler's look-ahead (its materialize is moments away).
        aim = now + (self.lookahead if target == "materialize" else timedelta(0))
        coming = [p for p in one_time if p.due_at >= aim]
        return min(coming, key=lambda p: p.due_at - aim, default=None)

    def take_next_due(
        self, lead: timedelta, usable: Callable[[PlannedPayment], bool]
    ) -> PlannedPayment | None:
        """The open one-time payment `usable` accepts that falls due first at least `lead` from
        now, taken out of the random cancels' reach: its caller stages its own cancel."""
        aim = datetime.now(UTC) + lead
        coming = [
            p
            for p in self.payments
            if p.id not in self._done and p.cron is None and p.due_at >= aim and usable(p)
        ]
        payment = min(coming, key=lambda p: p.due_at, default=None)
        if payment is not None:
            self._done.add(payment.id)
        return payment

    def cancel(self, pick: int) -> dict[str, Any]:
        target = TARGETS[pick % len(TARGETS)]
        payment = self._choose(target, datetime.now(UTC))
        if payment is None:
            return {"target": target, "outcome": "nothing to cancel"}
        return {"target": target, **self.cancel_payment(payment.id, target)}

    def cancel_payment(self, payment_id: int, target: str) -> dict[str, Any]:
        self._done.add(payment_id)
        due = next(p.due_at for p in self.payments if p.id == payment_id)
        lead_ms = round((due - datetime.now(UTC)).total_seconds() * 1000)
        try:
            result = self.store.control.cancel_payment(
                payment_id, datetime.now(UTC), "chaos: cancelled"
            )
        except Conflict as exc:  # already done, or its only occurrence is executing
            return {"payment": payment_id, "due_in_ms": lead_ms, "outcome": f"refused: {exc}"}
        committed_at = datetime.now(UTC)
        record = CancelRecord(
            payment_id,
            committed_at,
            target,
            [o.id for o in result.cancelled],
            [o.id for o in result.in_flight],
        )
        self.records.append(record)
        record.snapshot = self._read_back(payment_id)
        return {
            "payment": payment_id,
            "due_in_ms": lead_ms,
            "outcome": "cancelled",
            "occurrences_cancelled": len(record.cancelled),
            "in_flight": len(record.in_flight),
        }

    def _read_back(self, payment_id: int) -> dict[int, Occurrence] | None:
        """The payment's occurrences right after the cancel; None if the database would not
        answer within a few seconds (that cancel's snapshot rules are then not checked)."""
        for _ in range(20):
            try:
                return {o.id: o for o in self.store.reads.occurrences_of(payment_id)}
            except Exception:  # an injected outage; reading back is the harness's own business
                time.sleep(0.25)
        return None
