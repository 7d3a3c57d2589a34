"""The harness's approver: some payments require approval (see runner.create_payments), and
while the workers, schedulers and faults run, it approves or rejects what awaits approval,
through the store from its own connection, as `paysched approve | reject` do. Now and then it
decides one a second time at once, with the opposite answer: that one must be refused.

An approved occurrence is `scheduled` and nothing of the approver queues it: the schedulers'
reconcile does, as for an approval made in the chat. `approved_before_paid` (invariants.py)
then holds the end state to "nothing executed without its approval".
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

from sqlalchemy import select

from paysched.actors import Actor
from paysched.chaos.invariants import Result
from paysched.chaos.model import ApprovalRecord
from paysched.db import tables as t
from paysched.db.store import Store
from paysched.domain import OccurrenceState
from paysched.errors import Conflict

log = logging.getLogger("paysched.chaos")
APPROVER = Actor("cli", "chaos approver", "cli")
APPROVE_RATE = 0.75  # the rest are rejected
TWICE_RATE = 0.2
BATCH = 50  # decisions per step at most


class Approver:
    def __init__(self, store: Store, seed: int) -> None:
        self.store = store
        self.rng = random.Random(f"approvals-{seed}")
        self.records: list[ApprovalRecord] = []

    def _awaiting(self) -> list[int]:
        o = t.occurrences.c
        query = (
            select(o.id)
            .where(o.state == OccurrenceState.AWAITING_APPROVAL.value)
            .order_by(o.due_at, o.id)
            .limit(BATCH)
        )
        with self.store.engine.connect() as conn:
            return [r.id for r in conn.execute(query)]

    def step(self, now: datetime | None = None) -> int:
        """Decide on what awaits approval now; how many were decided. An outage (an injected
        fault) leaves the rest to the next step."""
        decided = 0
        try:
            waiting = self._awaiting()
        except Exception as exc:
            log.debug("approver: %s", exc)
            return 0
        for occurrence_id in waiting:
            approve = self.rng.random() < APPROVE_RATE
            twice = self.rng.random() < TWICE_RATE
            try:
                self.store.approvals.decide(
                    occurrence_id,
                    approve,
                    APPROVER,
                    now or datetime.now(UTC),
                    "" if approve else "chaos: rejected",
                )
            except Conflict:  # decided meanwhile (a retried step after an outage)
                continue
            except Exception as exc:
                log.debug("approver: %s", exc)
                return decided
            record = ApprovalRecord(occurrence_id, approve, datetime.now(UTC), twice)
            self.records.append(record)
            decided += 1
            if twice:
                try:
                    self.store.approvals.decide(
                        occurrence_id,
                        not approve,
                        APPROVER,
                        now or datetime.now(UTC),
                        "chaos: second",
                    )
                    record.again_accepted = True
                except Conflict:
                    record.again_refused = True
                except Exception as exc:
                    log.debug("approver: %s", exc)
        return decided


def decided_once(records: list[ApprovalRecord], seed: int) -> Result:
    """A second decision on an occurrence already decided was never taken."""
    r = Result(
        "approval_decided_once",
        "an occurrence decided once is never decided again "
        "(the second approve or reject is refused)",
    )
    for record in records:
        if record.again_accepted:
            r.violations.append(
                {
                    "seed": seed,
                    "occurrence_id": record.occurrence_id,
                    "problem": "a second decision was taken",
                }
            )
    return r


def approval_stats(records: list[ApprovalRecord]) -> dict[str, int]:
    return {
        "approved": sum(r.approve for r in records),
        "rejected": sum(not r.approve for r in records),
        "decided_twice_refused": sum(r.again_refused for r in records),
    }
