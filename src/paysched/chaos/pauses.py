"""Pauses of recurring payments at random moments of a chaos run, each held a few seconds, then
resumed.

Both go through the store from the harness's own connection, as a person's `pause` / `resume`
do, but without the queue work App does around them: the jobs of held occurrences stay in the
queue, so the workers' claims must refuse them, and what a resume releases is re-enqueued by
the schedulers' reconcile. The resume applies the payment's catch-up policy in this process,
so the harness's store has the children's `late_after`.

Right before resuming, the payment's transitions are read back: what had committed while it
was paused is what `pause_holds` holds to the promise that nothing of it starts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from paysched.chaos.model import PauseRecord, PlannedPayment
from paysched.db.store import Store
from paysched.domain import PaymentState, Transition
from paysched.errors import Conflict, NotFound

log = logging.getLogger("paysched.chaos")
T = TypeVar("T")
# Through a database outage (at most a few seconds), as end_recurring retries its cancels.
RETRIES = 40
RETRY_S = 0.5


class Pauser:
    def __init__(
        self,
        store: Store,
        payments: list[PlannedPayment],
        seed: int,
        sleep: Callable[[float], None],
        cancelled: Callable[[], set[int]],
    ) -> None:
        self.store = store
        self.payments = payments
        self.rng = random.Random(f"pauses-{seed}")
        self.sleep = sleep  # keeps the processes supervised while it waits
        self.cancelled = cancelled  # the payments the harness cancelled
        self.records: list[PauseRecord] = []
        self._failed = 0  # attempts of the last _retry that raised something else than Conflict

    def open_records(self) -> list[PauseRecord]:
        """Paused by the harness and not resumed yet (nor cancelled meanwhile)."""
        return [r for r in self.records if r.outcome == "paused"]

    def pause(self, hold_s: float) -> dict[str, Any]:
        """Pause an active recurring payment, hold it `hold_s` seconds, resume it."""
        busy = self.cancelled() | {r.payment_id for r in self.open_records()}
        candidates = [p for p in self.payments if p.cron is not None and p.id not in busy]
        if not candidates:
            return {"outcome": "nothing to pause"}
        payment = self.rng.choice(candidates)
        pid = payment.id
        try:
            held = self._retry(
                lambda: self.store.control.pause(pid, datetime.now(UTC)), f"pausing {pid}"
            )
            held_ids = [o.id for o in held.occurrences]
        except Conflict as exc:
            # An attempt that failed may have committed before its answer was lost: then this
            # one finds the payment paused, by the harness.
            failed = self._failed
            if not (failed and self._state(pid) == PaymentState.PAUSED):
                return {"payment": pid, "catchup": payment.catchup, "outcome": f"refused: {exc}"}
            held_ids = []  # not known: the answer was lost
        record = PauseRecord(pid, datetime.now(UTC), held_ids)
        self.records.append(record)
        self.sleep(hold_s)
        self.resume(record, "resumed")
        return {
            "payment": pid,
            "catchup": payment.catchup,
            "held": len(record.held),
            "held_s": hold_s,
            "outcome": record.outcome,
            "missed": len(record.missed),
        }

    def resume_open(self) -> None:
        """At the drain: resume every payment a pause left paused (its resume kept failing);
        a payment left paused would never finish."""
        for record in self.open_records():
            self.resume(record, "resumed at drain")

    def resume(self, record: PauseRecord, outcome: str) -> None:
        pid = record.payment_id
        if record.before_resume is None:
            record.before_resume = self._history(pid)
        first_call: datetime | None = None

        def call() -> Any:
            nonlocal first_call
            now = datetime.now(UTC)
            first_call = first_call or now
            held = self.store.control.resume(pid, now)
            return now, held

        try:
            called_at, held = self._retry(call, f"resuming {pid}")
        except Conflict as exc:
            failed = self._failed
            state = self._state(pid)
            if state == PaymentState.CANCELLED:
                record.outcome = "cancelled while paused"  # nothing left to resume
            elif failed and state in (PaymentState.ACTIVE, PaymentState.DONE):
                # An earlier attempt committed and its answer was lost: it was called at or
                # after the first call; what it missed is not known.
                record.resume_called_at = first_call
                record.resumed_at = datetime.now(UTC)
                record.outcome = f"{outcome} (answer lost)"
            else:
                log.warning("resuming payment %s: %s", pid, exc)
                record.outcome = f"resume refused: {exc}"
            return
        except Exception as exc:  # still down after every retry: the drain resumes it
            log.warning("resuming payment %s failed: %s; left to the drain", pid, exc)
            return
        record.resume_called_at = called_at
        record.resumed_at = datetime.now(UTC)
        record.missed = [o.id for o in held.missed]
        record.outcome = outcome

    def _retry(self, call: Callable[[], T], what: str) -> T:
        """call() until it returns or raises Conflict / NotFound, retrying anything else (the
        database is down or coming back)."""
        self._failed = 0
        for attempt in range(RETRIES):
            try:
                return call()
            except (Conflict, NotFound):
                raise
            except Exception as exc:
                self._failed += 1
                if attempt == RETRIES - 1:
                    raise
                log.info("%s: %s", what, exc)
                self.sleep(RETRY_S)
        raise AssertionError("unreachable")

    def _state(self, pid: int) -> PaymentState | None:
        try:
            return self._retry(lambda: self.store.payments.get_payment(pid).state, f"reading {pid}")
        except Exception:
            return None

    def _history(self, pid: int) -> list[Transition] | None:
        """The payment's transitions now; None if the database does not answer for a while."""
        for _ in range(10):
            try:
                ids = [o.id for o in self.store.reads.occurrences_of(pid)]
                return self.store.reads.transitions_of(ids) if ids else []
            except Exception:  # an injected outage
                self.sleep(0.25)
        return None
