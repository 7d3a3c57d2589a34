"""Skips of recurring payments' next occurrence at random moments of a chaos run: a person
pressing "Skip this one" under a reminder, racing the scheduler's materialize and the workers'
claims while processes die and servers restart.

A skip is what the button does: the payment's next due time is read (what the reminder named),
then `skip_occurrence` skips that occurrence and only it, from the harness's own connection,
while the scheduler may be creating it and a worker claiming it. What it skipped is recorded
with the moment it committed; `skip_holds` holds the end state to it: the skipped occurrence
never starts and never moves money. A press that comes too late (it began, ran or was missed)
changes nothing and is counted as such.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from paysched.chaos.model import PlannedPayment, SkipRecord
from paysched.db.store import Store
from paysched.db.store.control import NotSkippable
from paysched.errors import Conflict, NotFound

log = logging.getLogger("paysched.chaos")
# Through a database outage (at most a few seconds), as the pauses retry theirs.
RETRIES = 40
RETRY_S = 0.5
REASON = "skipped from the chat (chaos)"


class Skipper:
    def __init__(
        self,
        store: Store,
        payments: list[PlannedPayment],
        seed: int,
        sleep: Callable[[float], None],
        busy: Callable[[], set[int]],
    ) -> None:
        self.store = store
        self.payments = payments
        self.rng = random.Random(f"skips-{seed}")
        self.sleep = sleep  # keeps the processes supervised while it waits
        self.busy = busy  # payments cancelled or paused by the harness: left alone
        self.records: list[SkipRecord] = []

    def skip(self) -> dict[str, Any]:
        """Skip the next occurrence of an active recurring payment, named by its due time."""
        busy = self.busy()
        candidates = [p for p in self.payments if p.cron is not None and p.id not in busy]
        if not candidates:
            return {"outcome": "nothing to skip"}
        pid = self.rng.choice(candidates).id
        failed = 0
        for attempt in range(RETRIES):
            try:
                upcoming = self.store.control.upcoming(pid, 1)
                if not upcoming:
                    return {"payment": pid, "outcome": "nothing to skip"}
                named = upcoming[0].due  # the reminder's occurrence
                occ = self.store.control.skip_occurrence(pid, named, datetime.now(UTC), REASON)
            except NotSkippable as exc:
                # Too late (it began, ran or was missed meanwhile), or skipped by an attempt
                # whose answer was lost: nothing changed by this press.
                return {"payment": pid, "outcome": f"too late: {exc.why}", "lost_answers": failed}
            except (Conflict, NotFound) as exc:
                # After a failed attempt, that one may have committed and its answer been
                # lost: then this one skips the one after, and both are skips that held.
                return {"payment": pid, "outcome": f"refused: {exc}", "lost_answers": failed}
            except Exception as exc:  # the database is down or coming back
                failed += 1
                if attempt == RETRIES - 1:
                    log.warning("skipping for payment %s failed: %s", pid, exc)
                    return {"payment": pid, "outcome": f"failed: {exc}"}
                self.sleep(RETRY_S)
                continue
            record = SkipRecord(pid, occ.id, datetime.now(UTC))
            self.records.append(record)
            outcome = {"payment": pid, "occurrence": occ.id, "outcome": "skipped"}
            return {**outcome, "lost_answers": failed}
        raise AssertionError("unreachable")
