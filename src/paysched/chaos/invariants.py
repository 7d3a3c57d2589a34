"""The end-of-run checks, read from the database and the ledger (never from logs).

Each invariant yields violations; a violation names the occurrence, its transition history
(`Store.transitions_of`) and the seed, so the run can be replayed and the history read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from paysched.db import tables as t
from paysched.db.store import Store
from paysched.domain import FINAL_STATES, Occurrence, OccurrenceState

S = OccurrenceState


@dataclass(frozen=True)
class PlannedPayment:
    id: int
    payer: str
    payee: str
    amount: int
    due_at: datetime


@dataclass
class Result:
    name: str
    description: str
    violations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "description": self.description,
                "violations": len(self.violations), "details": self.violations[:20]}  # fmt: skip


def occurrence_view(occ: Occurrence) -> dict[str, Any]:
    return {
        "id": occ.id, "key": occ.key, "payment_id": occ.payment_id, "state": occ.state.value,
        "due_at": occ.due_at.isoformat(), "attempts": occ.attempts, "fence": occ.fence,
        "reason": occ.reason,
        "started_at": occ.started_at.isoformat() if occ.started_at else None,
        "finished_at": occ.finished_at.isoformat() if occ.finished_at else None,
    }  # fmt: skip


def check(
    store: Store,
    seed: int,
    payments: Sequence[PlannedPayment],
    deposits: dict[str, int],
    now: datetime,
) -> list[Result]:
    occurrences = store.all_occurrences()
    by_payment: dict[int, list[Occurrence]] = defaultdict(list)
    for occ in occurrences:
        by_payment[occ.payment_id].append(occ)
    with store.engine.connect() as conn:
        entries = conn.execute(
            select(t.ledger_entries.c.occurrence_id, t.ledger_entries.c.transfer_id,
                   t.ledger_entries.c.account_id, t.ledger_entries.c.amount)
            .where(t.ledger_entries.c.occurrence_id.is_not(None))
        ).all()  # fmt: skip
        balances = {
            name: int(balance)
            for name, balance in conn.execute(select(t.accounts.c.name, t.accounts.c.balance))
        }
        succeeded_into: Counter[int] = Counter(
            r.occurrence_id
            for r in conn.execute(
                select(t.transitions.c.occurrence_id).where(
                    t.transitions.c.to_state == S.SUCCEEDED.value
                )
            )
        )
    transfers: dict[int, set[str]] = defaultdict(set)
    entry_count: Counter[int] = Counter()
    for r in entries:
        transfers[r.occurrence_id].add(r.transfer_id)
        entry_count[r.occurrence_id] += 1

    final = Result("all_due_final", "every payment has its occurrence; every due one is final")
    once = Result("no_double_success", "no occurrence (or one-time payment) succeeded twice")
    match = Result("transfers_match_successes", "ledger transfers == succeeded occurrences")
    money = Result("balances_exact", "balance == deposits + transfers in - out, to the cent")
    early = Result("not_started_early", "occurrences.started_at >= due_at")
    reason = Result("failed_have_reason", "every failed occurrence has a reason")

    def bad(result: Result, occ: Occurrence | None, problem: str, **extra: Any) -> None:
        item: dict[str, Any] = {"seed": seed, "problem": problem, **extra}
        if occ is not None:
            item["occurrence"] = occurrence_view(occ)
            item["transitions"] = [
                {"at": tr.at.isoformat(), "from": tr.from_state.value if tr.from_state else None,
                 "to": tr.to_state.value, "attempt": tr.attempt, "reason": tr.reason}
                for tr in store.transitions_of([occ.id])
            ]  # fmt: skip
        result.violations.append(item)

    planned = {p.id: p for p in payments}
    for p in payments:
        if p.due_at <= now and not by_payment.get(p.id):
            bad(final, None, f"payment {p.id} due {p.due_at.isoformat()} has no occurrence")
        if len(by_payment.get(p.id, [])) > 1:
            for occ in by_payment[p.id]:
                bad(once, occ, f"one-time payment {p.id} has {len(by_payment[p.id])} occurrences")
    for occ in occurrences:
        # needs_review is where paysched stops guessing (a job that kept killing its
        # workers, an outcome still unknown): settled, for now, by a person, with a reason.
        parked = occ.state == S.NEEDS_REVIEW and bool((occ.reason or "").strip())
        if occ.due_at <= now and occ.state not in FINAL_STATES and not parked:
            bad(final, occ, f"due occurrence is still {occ.state.value}")
        if succeeded_into[occ.id] > 1:
            bad(once, occ, f"entered succeeded {succeeded_into[occ.id]} times")
        if len(transfers.get(occ.id, ())) > 1 or entry_count[occ.id] not in (0, 2):
            bad(once, occ, f"{entry_count[occ.id]} ledger entries in {len(transfers[occ.id])} "
                           "transfers")  # fmt: skip
        if (occ.state == S.SUCCEEDED) != (occ.id in transfers):
            bad(match, occ, f"state {occ.state.value} but transfer present: {occ.id in transfers}")
        if occ.started_at is not None and occ.started_at < occ.due_at:
            early_by = (occ.due_at - occ.started_at).total_seconds() * 1000
            bad(early, occ, f"started {early_by:.3f} ms before its due time")
        if occ.state == S.FAILED and not (occ.reason or "").strip():
            bad(reason, occ, "failed without a reason")
    succeeded = sum(1 for o in occurrences if o.state == S.SUCCEEDED)
    if succeeded != len(transfers):
        bad(match, None, f"{succeeded} succeeded occurrences but {len(transfers)} transfers")

    expected = dict.fromkeys(balances, 0)
    for name, amount in deposits.items():
        expected[name] += amount
    for occ in occurrences:
        if occ.state == S.SUCCEEDED:
            p = planned[occ.payment_id]
            expected[p.payer] -= p.amount
            expected[p.payee] += p.amount
    for name, balance in sorted(balances.items()):
        if name.startswith("@"):
            continue  # the external account: minus the deposits, checked by the ledger report
        if balance != expected[name]:
            bad(money, None, f"account {name}: balance {balance} != expected {expected[name]}",
                account=name, balance=balance, expected=expected[name])  # fmt: skip
    for problem in store.ledger_report().problems:
        bad(money, None, f"ledger: {problem}")
    return [final, once, match, money, early, reason]
