"""The end-of-run checks, read from the database and the ledger (never from logs).

Each invariant yields violations; a violation names the occurrence, its transition history
(`Reads.transitions_of`) and the seed, so the run can be replayed and the history read.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from croniter import croniter
from sqlalchemy import select

from paysched.chaos.model import (
    CancelRecord,
    PauseRecord,
    PlannedPayment,
    ProviderView,
    SkipRecord,
)
from paysched.db import tables as t
from paysched.db.store import Store
from paysched.db.store.payments import LATE_AFTER
from paysched.domain import (
    FINAL_STATES,
    UNRESOLVED_STATES,
    Occurrence,
    OccurrenceState,
    PaymentState,
    Transition,
    cancellable,
)

S = OccurrenceState
__all__ = ["PlannedPayment", "Result", "check"]
# A failure whose reason is paysched's own infrastructure (never an attempt, never "failed").
INFRA_REASON = re.compile(
    r"database|OperationalError|InterfaceError|InfrastructureError|server closed|psycopg|sqlite",
    re.IGNORECASE,
)


@dataclass
class Result:
    name: str
    description: str
    violations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "description": self.description,
            "violations": len(self.violations),
            "details": self.violations[:20],
        }


def occurrence_view(occ: Occurrence) -> dict[str, Any]:
    return {
        "id": occ.id,
        "key": occ.key,
        "payment_id": occ.payment_id,
        "state": occ.state.value,
        "due_at": occ.due_at.isoformat(),
        "attempts": occ.attempts,
        "fence": occ.fence,
        "reason": occ.reason,
        "started_at": occ.started_at.isoformat() if occ.started_at else None,
        "finished_at": occ.finished_at.isoformat() if occ.finished_at else None,
    }


def check(
    store: Store,
    seed: int,
    payments: Sequence[PlannedPayment],
    deposits: dict[str, int],
    now: datetime,
    cancels: Sequence[CancelRecord] = (),
    provider: ProviderView | None = None,
    pauses: Sequence[PauseRecord] = (),
    late_after: timedelta = LATE_AFTER,
    skips: Sequence[SkipRecord] = (),
) -> list[Result]:
    """`late_after`: the run's PAYSCHED_CATCHUP_LATE_AFTER (what missed_only_by_policy
    holds a missed occurrence's lateness to)."""
    return Checker(
        store, seed, payments, deposits, now, cancels, provider, pauses, late_after, skips
    ).run()


class Checker:
    """Every invariant over one end state; `run` returns them in report order."""

    def __init__(
        self,
        store: Store,
        seed: int,
        payments: Sequence[PlannedPayment],
        deposits: dict[str, int],
        now: datetime,
        cancels: Sequence[CancelRecord],
        provider: ProviderView | None,
        pauses: Sequence[PauseRecord] = (),
        late_after: timedelta = LATE_AFTER,
        skips: Sequence[SkipRecord] = (),
    ) -> None:
        self.store, self.seed, self.now = store, seed, now
        self.pauses = list(pauses)
        self.skips = list(skips)
        self.late_after = late_after
        self.payments = list(payments)
        self.planned = {p.id: p for p in payments}
        self.deposits = deposits
        self.cancels = list(cancels)
        self.provider = provider
        self.occurrences = store.reads.all_occurrences()
        self.by_payment: dict[int, list[Occurrence]] = defaultdict(list)
        for occ in self.occurrences:
            self.by_payment[occ.payment_id].append(occ)
        self.history: dict[int, list[Transition]] = defaultdict(list)
        if self.occurrences:
            for tr in store.reads.transitions_of([o.id for o in self.occurrences]):
                self.history[tr.occurrence_id].append(tr)
        with store.engine.connect() as conn:
            entries = conn.execute(
                select(t.ledger_entries.c.occurrence_id, t.ledger_entries.c.transfer_id).where(
                    t.ledger_entries.c.occurrence_id.is_not(None)
                )
            ).all()
            self.balances = {
                name: int(balance)
                for name, balance in conn.execute(select(t.accounts.c.name, t.accounts.c.balance))
            }
            self.payment_states: dict[int, PaymentState] = {}
            self.catchup: dict[int, tuple[str, int | None]] = {}  # policy, window (s)
            p = t.payments.c
            self.approval_required: set[int] = set()  # payments created requiring approval
            for pid, state, policy, window, approval in conn.execute(
                select(p.id, p.state, p.catchup, p.catchup_window_s, p.approval)
            ):
                self.payment_states[pid] = PaymentState(state)
                self.catchup[pid] = (policy, window)
                if approval == "required":
                    self.approval_required.add(pid)
        self.transfers: dict[int, set[str]] = defaultdict(set)
        self.entry_count: Counter[int] = Counter()
        for r in entries:
            self.transfers[r.occurrence_id].add(r.transfer_id)
            self.entry_count[r.occurrence_id] += 1

    def bad(self, result: Result, occ: Occurrence | None, problem: str, **extra: Any) -> None:
        item: dict[str, Any] = {"seed": self.seed, "problem": problem, **extra}
        if occ is not None:
            item["occurrence"] = occurrence_view(occ)
            item["transitions"] = [
                {
                    "at": tr.at.isoformat(),
                    "from": tr.from_state.value if tr.from_state else None,
                    "to": tr.to_state.value,
                    "attempt": tr.attempt,
                    "reason": tr.reason,
                }
                for tr in self.history[occ.id]
            ]
        result.violations.append(item)

    def run(self) -> list[Result]:
        results = [
            self.all_due_final(),
            self.no_double_success(),
            self.money_moved_once(),
            self.balances_exact(),
            self.not_started_early(),
            self.failed_have_reason(),
            self.no_failure_from_infrastructure(),
            self.unknowns_resolved(),
            self.cancel_wins(),
            self.recurring_complete(),
            self.pause_holds(),
            self.missed_only_by_policy(),
            self.skip_holds(),
            self.approved_before_paid(),
        ]
        return results

    # -- nothing lost -------------------------------------------------------------------------

    def all_due_final(self) -> Result:
        r = Result("all_due_final", "every payment has its occurrence; every due one is final")
        for p in self.payments:
            cancelled = self.payment_states.get(p.id) == PaymentState.CANCELLED
            if p.due_at <= self.now and not self.by_payment.get(p.id) and not cancelled:
                self.bad(r, None, f"payment {p.id} due {p.due_at.isoformat()} has no occurrence")
        for occ in self.occurrences:
            # needs_review is where paysched stops guessing (a job that kept killing its
            # workers, an outcome still unknown): settled, for now, by a person, with a reason.
            if occ.due_at <= self.now and occ.state not in FINAL_STATES and not self._parked(occ):
                self.bad(r, occ, f"due occurrence is still {occ.state.value}")
        return r

    @staticmethod
    def _parked(occ: Occurrence) -> bool:
        return occ.state == S.NEEDS_REVIEW and bool((occ.reason or "").strip())

    def recurring_complete(self) -> Result:
        r = Result(
            "recurring_complete",
            "a recurring payment's occurrences follow its cron "
            "without a gap or a duplicate, from its first due time on",
        )
        for p in self.payments:
            if p.cron is None:
                continue
            occs = sorted(self.by_payment.get(p.id, []), key=lambda o: o.due_at)
            if not occs:
                if p.due_at <= self.now and self.payment_states.get(p.id) != PaymentState.CANCELLED:
                    self.bad(r, None, f"recurring payment {p.id} has no occurrence")
                continue
            # The cron times from the first due time to the last materialized one, computed
            # here with croniter directly (not paysched's own next_cron).
            it = croniter(p.cron, p.due_at, second_at_beginning=len(p.cron.split()) == 6)
            expected = [p.due_at]
            while (nxt := it.get_next(datetime)) <= occs[-1].due_at:
                expected.append(nxt)
            got = [o.due_at for o in occs]
            if got != expected:
                missing = sorted(set(expected) - set(got))
                extra = sorted(set(got) - set(expected))
                self.bad(
                    r,
                    None,
                    f"recurring payment {p.id}: {len(got)} occurrences, "
                    f"{len(expected)} cron times up to the last",
                    payment=p.id,
                    missing=[m.isoformat() for m in missing[:5]],
                    unexpected=[e.isoformat() for e in extra[:5]],
                )
        return r

    def approved_before_paid(self) -> Result:
        """Nothing executed without its approval: every occurrence of a payment that requires
        approval was created awaiting it; none started (a transition into executing), moved money
        in the ledger or was charged by the provider unless a person approved it first (its one
        awaiting_approval -> scheduled); one rejected or timed out never did any of these."""
        r = Result(
            "approved_before_paid",
            "nothing of a payment requiring approval started, moved "
            "money or was charged before someone approved it; a rejected or timed-out "
            "occurrence never did",
        )
        charged = {c["key"] for c in (self.provider.charges if self.provider else [])}
        for occ in self.occurrences:
            if occ.payment_id not in self.approval_required:
                continue
            history = self.history[occ.id]
            if not history or history[0].to_state != S.AWAITING_APPROVAL:
                first = history[0].to_state.value if history else "nothing"
                self.bad(r, occ, f"requires approval but was created {first}")
                continue
            decisions = [i for i, tr in enumerate(history) if tr.from_state == S.AWAITING_APPROVAL]
            if len(decisions) > 1:
                self.bad(r, occ, f"left awaiting_approval {len(decisions)} times")
            approved = [i for i in decisions if history[i].to_state == S.SCHEDULED]
            started = [i for i, tr in enumerate(history) if tr.to_state == S.EXECUTING]
            moved = occ.id in self.transfers or occ.key in charged
            if not approved:
                if started or moved:
                    what = "started" if started else "moved money"
                    self.bad(r, occ, f"{what} though never approved")
            elif started and started[0] < approved[0]:
                self.bad(r, occ, "started before it was approved")
        return r

    # -- exactly once -------------------------------------------------------------------------

    def no_double_success(self) -> Result:
        r = Result("no_double_success", "no occurrence (or one-time payment) succeeded twice")
        for p in self.payments:
            occs = self.by_payment.get(p.id, [])
            if p.cron is None and len(occs) > 1:
                for occ in occs:
                    self.bad(r, occ, f"one-time payment {p.id} has {len(occs)} occurrences")
        for occ in self.occurrences:
            entered = sum(1 for tr in self.history[occ.id] if tr.to_state == S.SUCCEEDED)
            if entered > 1:
                self.bad(r, occ, f"entered succeeded {entered} times")
            if len(self.transfers.get(occ.id, ())) > 1 or self.entry_count[occ.id] not in (0, 2):
                self.bad(
                    r,
                    occ,
                    f"{self.entry_count[occ.id]} ledger entries in "
                    f"{len(self.transfers[occ.id])} transfers",
                )
        return r

    def money_moved_once(self) -> Result:
        if self.provider is None:
            r = Result("transfers_match_successes", "ledger transfers == succeeded occurrences")
            for occ in self.occurrences:
                if (occ.state == S.SUCCEEDED) != (occ.id in self.transfers):
                    self.bad(
                        r,
                        occ,
                        f"state {occ.state.value} but transfer present: {occ.id in self.transfers}",
                    )
            succeeded = sum(1 for o in self.occurrences if o.state == S.SUCCEEDED)
            if succeeded != len(self.transfers):
                self.bad(
                    r,
                    None,
                    f"{succeeded} succeeded occurrences but {len(self.transfers)} transfers",
                )
            return r
        return self._provider_charged_once()

    def _provider_charged_once(self) -> Result:
        assert self.provider is not None
        r = Result(
            "provider_charged_once",
            "the provider charged each succeeded occurrence's "
            "key exactly once, for its amount, and nothing else",
        )
        charges: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for charge in self.provider.charges:
            charges[charge["key"]].append(charge)
        by_key = {o.key: o for o in self.occurrences}
        for key, found in charges.items():
            occ = by_key.get(key)
            if occ is None:
                self.bad(r, None, f"provider charge {key} matches no occurrence", charges=found)
                continue
            if len(found) > 1:
                self.bad(r, occ, f"provider holds {len(found)} charges for one key")
            paid = [c for c in found if c["status"] == "succeeded"]
            if paid and occ.state != S.SUCCEEDED and not self._parked(occ):
                self.bad(r, occ, f"provider charged it but the occurrence is {occ.state.value}")
            if any(c["status"] == "pending" for c in found) and occ.state in FINAL_STATES:
                self.bad(r, occ, f"provider still pending but the occurrence is {occ.state.value}")
            p = self.planned[occ.payment_id]
            for c in paid:
                if (Decimal(c["amount"]) * 100, c["from"], c["to"]) != (
                    Decimal(p.amount),
                    p.payer,
                    p.payee,
                ):
                    self.bad(r, occ, "provider charge differs from the payment", charge=c)
        for occ in self.occurrences:
            if occ.state == S.SUCCEEDED and not any(
                c["status"] == "succeeded" for c in charges.get(occ.key, [])
            ):
                self.bad(r, occ, "succeeded, but the provider has no succeeded charge for its key")
            if occ.id in self.transfers:
                self.bad(r, occ, "a provider-paid occurrence has local ledger entries")
        return r

    def balances_exact(self) -> Result:
        r = Result("balances_exact", "balance == deposits + transfers in - out, to the cent")
        moved: dict[str, int] = defaultdict(int)
        # Parked for a person but charged at the provider: the money did move (the person
        # will resolve it as succeeded); it counts at the provider, not in paysched's view.
        charged = {
            c["key"]
            for c in (self.provider.charges if self.provider else [])
            if c["status"] == "succeeded"
        }
        for occ in self.occurrences:
            if occ.state == S.SUCCEEDED or (self._parked(occ) and occ.key in charged):
                p = self.planned[occ.payment_id]
                moved[p.payer] -= p.amount
                moved[p.payee] += p.amount
        local = {**moved} if self.provider is None else {}  # a provider moves its own money
        for name, balance in sorted(self.balances.items()):
            if name.startswith("@"):
                continue  # the external account: minus the deposits, checked by the ledger report
            expected = self.deposits.get(name, 0) + local.get(name, 0)
            if balance != expected:
                self.bad(
                    r,
                    None,
                    f"account {name}: balance {balance} != expected {expected}",
                    account=name,
                    balance=balance,
                    expected=expected,
                )
        for problem in self.store.accounts.ledger_report().problems:
            self.bad(r, None, f"ledger: {problem}")
        if self.provider is not None:
            for name, start in sorted(self.provider.initial.items()):
                want = start + Decimal(moved.get(name, 0)) / 100
                have = self.provider.balances.get(name)
                if have != want:
                    self.bad(
                        r,
                        None,
                        f"provider account {name}: {have} != expected {want}",
                        account=name,
                        balance=str(have),
                        expected=str(want),
                    )
        return r

    # -- on time, and every end explained -----------------------------------------------------

    def not_started_early(self) -> Result:
        r = Result("not_started_early", "occurrences.started_at >= due_at")
        for occ in self.occurrences:
            if occ.started_at is not None and occ.started_at < occ.due_at:
                early_by = (occ.due_at - occ.started_at).total_seconds() * 1000
                self.bad(r, occ, f"started {early_by:.3f} ms before its due time")
        return r

    def failed_have_reason(self) -> Result:
        r = Result("failed_have_reason", "every failed occurrence has a reason")
        for occ in self.occurrences:
            if occ.state == S.FAILED and not (occ.reason or "").strip():
                self.bad(r, occ, "failed without a reason")
        return r

    def no_failure_from_infrastructure(self) -> Result:
        r = Result(
            "no_failure_from_infrastructure",
            "no occurrence failed because paysched's own database failed; such errors never "
            "count as attempts",
        )
        for occ in self.occurrences:
            if occ.state == S.FAILED and INFRA_REASON.search(occ.reason or ""):
                self.bad(r, occ, "failed with an infrastructure reason")
            for tr in self.history[occ.id]:
                counted = tr.to_state == S.RETRYING and "not counted" not in (tr.reason or "")
                if counted and INFRA_REASON.search(tr.reason or ""):
                    self.bad(r, occ, "an infrastructure error was counted as an attempt")
                    break
        return r

    def unknowns_resolved(self) -> Result:
        r = Result(
            "unknowns_resolved",
            "every unknown outcome was resolved (asked, never "
            "guessed) or is in needs_review with a reason",
        )
        for occ in self.occurrences:
            was_unknown = any(tr.to_state == S.UNKNOWN for tr in self.history[occ.id])
            if was_unknown and occ.state in UNRESOLVED_STATES and not self._parked(occ):
                self.bad(r, occ, f"an unknown outcome is still {occ.state.value}")
        return r

    # -- cancels ------------------------------------------------------------------------------

    def cancel_wins(self) -> Result:
        r = Result(
            "cancel_wins",
            "once a cancel commits, nothing of its payment starts: what it cancelled stays "
            "cancelled, no claim begins after it, nothing new appears",
        )
        for record in self.cancels:
            pid = record.payment_id
            if self.payment_states.get(pid) != PaymentState.CANCELLED:
                self.bad(r, None, f"payment {pid} cancelled but is {self.payment_states.get(pid)}")
            snapshot = record.snapshot
            for occ in self.by_payment.get(pid, []):
                began = [tr.at for tr in self.history[occ.id] if tr.to_state == S.EXECUTING]
                if any(at > record.committed_at for at in began) and occ.id not in record.in_flight:
                    self.bad(
                        r,
                        occ,
                        "claimed after its payment's cancel committed at "
                        f"{record.committed_at.isoformat()}",
                    )
                if snapshot is None:
                    continue
                seen = snapshot.get(occ.id)
                if seen is None:
                    self.bad(r, occ, "created after its payment's cancel committed")
                elif cancellable(seen):
                    # Not: retrying after a takeover. Its stalled worker's request may have
                    # reached the provider, so the cancel leaves it to be asked about first.
                    self.bad(
                        r,
                        occ,
                        f"still {seen.state.value} right after its payment's cancel committed",
                    )
                elif seen.state in FINAL_STATES and occ.state != seen.state:
                    self.bad(
                        r, occ, f"was {seen.state.value} at the cancel, is {occ.state.value} now"
                    )
        return r

    # -- pauses and catch-up ------------------------------------------------------------------

    def pause_holds(self) -> Result:
        """For each pause the harness made, in the payment's history as read right before its
        resume was called (everything there had committed before the resume did): no
        transition into executing from another state (a claim: a first attempt or a retry)
        and no occurrence created (its first transition) stamped after the pause committed
        (`paused_at`, read after it returned) and before `resume_called_at`.

        A takeover (executing -> executing) continues an attempt that began before the pause,
        so it may happen. The end state's history is not used for this: a process stamps a
        transition with the time it read before its transaction, so a claim that waited on a
        lock across the resume's commit would carry a time inside the window although it ran
        after the resume. Also: no payment is left paused at the end of the run.
        """
        r = Result(
            "pause_holds",
            "nothing of a paused payment starts or is created until it "
            "is resumed, and every pause ends",
        )
        for record in self.pauses:
            seen = record.before_resume
            if seen is None:
                continue  # that read failed (an outage): this pause is not checked
            end = record.resume_called_at
            by_id = {o.id: o for o in self.by_payment.get(record.payment_id, [])}
            for tr in seen:
                if not (tr.at > record.paused_at and (end is None or tr.at < end)):
                    continue
                occ = by_id.get(tr.occurrence_id)
                if tr.to_state == S.EXECUTING and tr.from_state != S.EXECUTING:
                    self.bad(
                        r,
                        occ,
                        f"started at {tr.at.isoformat()} while its payment was "
                        f"paused (from {record.paused_at.isoformat()})",
                    )
                if tr.from_state is None:
                    self.bad(
                        r,
                        occ,
                        f"created at {tr.at.isoformat()} while its payment was "
                        f"paused (from {record.paused_at.isoformat()})",
                    )
        for pid, state in sorted(self.payment_states.items()):
            if state == PaymentState.PAUSED:
                self.bad(r, None, f"payment {pid} is still paused at the end", payment=pid)
        return r

    def skip_holds(self) -> Result:
        """For each skip the harness made: the occurrence it skipped is skipped at the end, was
        never claimed (a skip takes only what has not started) and moved no money, by
        paysched's ledger or the provider's."""
        r = Result(
            "skip_holds",
            "an occurrence skipped before its claim never starts and never moves money",
        )
        by_id = {o.id: o for o in self.occurrences}
        charges = self.provider.charges if self.provider is not None else []
        charged = {c["key"] for c in charges if c["status"] == "succeeded"}
        for record in self.skips:
            occ = by_id.get(record.occurrence_id)
            if occ is None:
                self.bad(
                    r,
                    None,
                    f"occurrence {record.occurrence_id} skipped at "
                    f"{record.committed_at.isoformat()} is gone",
                )
                continue
            if occ.state != S.SKIPPED:
                self.bad(
                    r,
                    occ,
                    f"skipped at {record.committed_at.isoformat()}, is {occ.state.value} now",
                )
            if any(tr.to_state == S.EXECUTING for tr in self.history[occ.id]):
                self.bad(r, occ, "claimed although it was skipped before it started")
            if occ.id in self.transfers or occ.key in charged:
                self.bad(r, occ, "money moved for an occurrence that was skipped")
        return r

    def missed_only_by_policy(self) -> Result:
        """Exactly this, for every occurrence in state missed:
        - its payment's catch-up policy is `latest` or `none`, or it has a window (with `all`
          and no window nothing is ever missed);
        - it became missed once, from scheduled or queued, without an attempt (never executing);
        - it was due more than `late_after` before the moment it was marked missed (the
          transition's time: the `now` of the resume or materialize that found it late);
        - with `latest` and no window, a later-due occurrence of its payment is not missed
          (each catch-up runs the most recent late one; a later catch-up that misses that
          one runs a still later one);
        and every occurrence a harness resume reported missed is missed, stamped with that
        resume's `now` (`resume_called_at`), due more than `late_after` before it.

        It does not check that each payment missed as many as its policy allows at most (that
        depends on which occurrences had started when each catch-up ran)."""
        r = Result(
            "missed_only_by_policy",
            "an occurrence is missed only by its payment's catch-up policy, when found late",
        )
        for occ in self.occurrences:
            if occ.state != S.MISSED:
                continue
            policy, window = self.catchup.get(occ.payment_id, ("all", None))
            if policy == "all" and window is None:
                self.bad(r, occ, "missed, but its payment's catch-up policy is all")
            into = [tr for tr in self.history[occ.id] if tr.to_state == S.MISSED]
            began = any(tr.to_state == S.EXECUTING for tr in self.history[occ.id])
            if (
                len(into) != 1
                or into[0].from_state not in (S.SCHEDULED, S.QUEUED)
                or began
                or occ.attempts
            ):
                self.bad(
                    r, occ, "missed other than once from scheduled or queued before an attempt"
                )
            if into and not occ.due_at < into[0].at - self.late_after:
                self.bad(
                    r,
                    occ,
                    f"missed at {into[0].at.isoformat()}, not more than "
                    f"{self.late_after.total_seconds():g}s after it was due",
                )
            if (
                policy == "latest"
                and window is None
                and not any(
                    o.due_at > occ.due_at and o.state != S.MISSED
                    for o in self.by_payment[occ.payment_id]
                )
            ):
                self.bad(
                    r,
                    occ,
                    "missed under catch-up policy latest, and no later "
                    "occurrence of its payment runs",
                )
        by_id = {o.id: o for o in self.occurrences}
        for record in self.pauses:
            for oid in record.missed:
                found = by_id.get(oid)
                into = [tr for tr in self.history[oid] if tr.to_state == S.MISSED]
                if found is None or found.state != S.MISSED:
                    self.bad(
                        r,
                        found,
                        f"its resume reported it missed, but it is "
                        f"{found.state.value if found else 'gone'}",
                    )
                elif record.resume_called_at is not None and (
                    not into
                    or into[0].at != record.resume_called_at
                    or not found.due_at < record.resume_called_at - self.late_after
                ):
                    self.bad(
                        r,
                        found,
                        "its resume at "
                        f"{record.resume_called_at.isoformat()} reported it missed, but "
                        "it was not missed then, or not late then",
                    )
        return r
