"""Occurrences being executed: claim, settle in the ledger, finish, and resolve unknowns.

Every change of state goes through `transitions.apply` (one SQL compare-and-set per occurrence
on state and fence, rowcount checked); only the unknown-outcome bookkeeping (when to ask the
provider next) updates occurrences directly, leaving the state as it is. The rows are read
under a lock first only to decide what to write and to answer per item: a stale claim gets
False, a payment of a cancelled payment is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from paysched.db import tables as t
from paysched.db.store import transitions
from paysched.db.store.accounts import entries, write_entries
from paysched.db.store.base import AfterWrite, Database, enqueue_notifications, existing_id
from paysched.db.store.rows import claim_rows, occurrence_from, payment_from
from paysched.domain import (
    CANCELLABLE_STATES,
    FINAL_STATES,
    MAX_BALANCE,
    UNRESOLVED_STATES,
    Occurrence,
    OccurrenceState,
    OutboxMessage,
    Payment,
    PaymentState,
    cancellable,
    format_amount,
)
from paysched.errors import (
    BalanceLimit,
    CurrencyMismatch,
    InsufficientFunds,
    NotFound,
    PermanentError,
    UnknownAccount,
)

S = OccurrenceState
TAKEOVER = "taken over after its worker stalled or died"
PAYMENT_CANCELLED = "payment cancelled"


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker holds after a successful claim: the occurrence, its payment and the fence."""

    occurrence: Occurrence
    payment: Payment
    fence: int
    attempt: int  # business attempts including this one (a takeover continues the same one)
    payer_id: int
    payee_id: int
    # Notifications to commit with the move to succeeded (set by the worker; executors that
    # settle themselves pass them on, so they commit in the same transaction as the money).
    on_success: tuple[OutboxMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class NoClaim:
    """Why a job's occurrence was not claimed."""

    why: str  # missing | foreign | final | unresolved | cancelled | paused | awaiting
    state: OccurrenceState | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """One occurrence's move out of executing, for Execution.finish_many."""

    claim: Claim
    target: OccurrenceState
    reason: str | None
    outbox: tuple[OutboxMessage, ...] = ()
    reference: str | None = None
    resolve_at: datetime | None = None  # target UNKNOWN: when the resolver first asks
    # An infrastructure error ended the attempt: it does not count as one of the payment's.
    uncount: bool = False


@functools.cache
def _payments_of() -> Any:
    """The payments of some occurrences, share-locked in id order: a cancel (which locks its
    payment for update) either committed before and is seen, or waits for the claim."""
    occ = t.occurrences.c
    return (
        select(t.payments.c.id, t.payments.c.state)
        .where(
            t.payments.c.id.in_(
                select(occ.payment_id).where(occ.id.in_(bindparam("ids", expanding=True)))
            )
        )
        .order_by(t.payments.c.id)
        .with_for_update(read=True)
    )


@functools.cache
def _locked_accounts() -> Any:
    acc = t.accounts.c
    return (
        select(t.accounts)
        .where(acc.id.in_(bindparam("ids", expanding=True)))
        .order_by(acc.id)  # a fixed lock order: two batches cannot deadlock on accounts
        .with_for_update()
    )


@functools.cache
def _balance_update() -> Any:
    return (
        update(t.accounts)
        .where(t.accounts.c.id == bindparam("b_id"))
        .values(balance=t.accounts.c.balance + bindparam("b_delta"))
    )


class Execution:
    """Occurrences being executed: claims, settles, finishes, unknown outcomes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, occurrence_id: int, now: datetime, key: str | None = None) -> Claim | NoClaim:
        """Take the occurrence for execution (bumping its fence)."""
        return self.claim_many([(occurrence_id, key)], now)[0]

    def claim_many(
        self, requests: Sequence[tuple[int, str | None]], now: datetime
    ) -> list[Claim | NoClaim]:
        """claim() for a batch of (occurrence id, expected key), in one transaction; one result
        per request, in order. A key that does not match the row means the job came from
        another database: it is refused, never claimed.

        A claim from scheduled/queued/retrying starts a business attempt (attempts + 1); a claim
        of an occurrence still executing is a takeover from a worker that died or stalled: the
        same attempt continues under a new fence. An occurrence whose payment was cancelled is
        cancelled here instead of started. An id twice in a batch behaves as two claims one
        after the other: the second takes over.
        """
        ids = sorted({occurrence_id for occurrence_id, _ in requests})
        with self.db.engine.begin() as conn:
            if self.db.dialect == "postgresql":
                # Only for its locks (see _payments_of): the states are the joined p_state
                # below, read after them. SQLite's BEGIN IMMEDIATE already holds the whole
                # database, and there the statement was one of four per claim for nothing.
                conn.execute(_payments_of(), {"ids": ids})
            rows = {row.id: row for row in conn.execute(claim_rows(), {"ids": ids})}
            payment_states = {row.payment_id: row.p_state for row in rows.values()}
            current: dict[int, Occurrence] = {}
            results: list[Claim | NoClaim] = []
            changes: list[transitions.Change] = []
            for occurrence_id, key in requests:
                row = rows.get(occurrence_id)
                if row is None:
                    results.append(NoClaim("missing"))
                    continue
                occ = current.get(occurrence_id) or occurrence_from(row)
                if key is not None and occ.key != key:
                    results.append(NoClaim("foreign", occ.state))
                    continue
                if occ.state in FINAL_STATES or occ.state in UNRESOLVED_STATES:
                    why = "final" if occ.state in FINAL_STATES else "unresolved"
                    results.append(NoClaim(why, occ.state))
                    continue
                cancelled = payment_states.get(occ.payment_id) == PaymentState.CANCELLED.value
                if cancelled and cancellable(occ):
                    after = replace(
                        occ, state=S.CANCELLED, reason=PAYMENT_CANCELLED, finished_at=now
                    )
                    changes.append(transitions.Change(occ, after))
                    current[occurrence_id] = after
                    results.append(NoClaim("cancelled", S.CANCELLED))
                    continue
                if occ.state == S.AWAITING_APPROVAL:
                    # Never started before a person approves it, whatever job asks: one
                    # enqueued by mistake (or left from before) is refused, not run.
                    results.append(NoClaim("awaiting", occ.state))
                    continue
                paused = payment_states.get(occ.payment_id) == PaymentState.PAUSED.value
                if paused and occ.state in CANCELLABLE_STATES:
                    # Held as it is: resuming the payment re-enqueues it (or its catch-up
                    # policy marks it missed); nothing of a paused payment starts.
                    results.append(NoClaim("paused", occ.state))
                    continue
                takeover = occ.state == S.EXECUTING
                after = replace(
                    occ,
                    state=S.EXECUTING,
                    fence=occ.fence + 1,
                    attempts=occ.attempts + (0 if takeover else 1),
                    takeovers=occ.takeovers + (1 if takeover else 0),
                    started_at=occ.started_at or now,
                    reason=TAKEOVER if takeover else occ.reason,
                )
                changes.append(transitions.Change(occ, after, note=TAKEOVER if takeover else ""))
                current[occurrence_id] = after
                payment = payment_from(row, prefix="p_")
                results.append(
                    Claim(
                        after, payment, after.fence, after.attempts, row.p_payer_id, row.p_payee_id
                    )
                )
            transitions.apply(conn, changes, now)
            return results

    def settle_transfer(self, claim: Claim, now: datetime) -> bool:
        """Move the money and mark the occurrence succeeded in ONE transaction.

        Returns False (and moves nothing) when the claim lost its fence: someone else holds or
        finished the occurrence. Raises a PermanentError for insufficient funds, unknown accounts
        or a currency mismatch, having written nothing.
        """
        result = self.settle_many([claim], now)[0]
        if isinstance(result, PermanentError):
            raise result
        return result

    def settle_many(self, claims: Sequence[Claim], now: datetime) -> list[bool | PermanentError]:
        """settle_transfer() for a batch, in ONE transaction; one result per claim, in order:
        True (moved and succeeded), False (fenced out), or the PermanentError of that claim
        alone — the others still commit.

        The occurrences and the accounts involved are locked first (accounts in id order, so
        two batches cannot deadlock on them), balances are checked in that locked view claim by
        claim, then every write of the batch is one statement each: the compare-and-sets, their
        history, the ledger entries, the notifications and one balance update per account.
        """
        with self.db.engine.begin() as conn:
            locked = transitions.lock(conn, {c.occurrence.id for c in claims})
            account_ids = {c.payer_id for c in claims} | {c.payee_id for c in claims}
            accounts = {
                row.id: row
                for row in conn.execute(_locked_accounts(), {"ids": sorted(account_ids)})
            }
            balance = {account_id: int(row.balance) for account_id, row in accounts.items()}
            delta: dict[int, int] = {}
            results: list[bool | PermanentError] = []
            changes: list[transitions.Change] = []
            ledger: list[dict[str, object]] = []
            outbox: list[OutboxMessage] = []
            for claim in claims:
                payment = claim.payment
                occ = locked.get(claim.occurrence.id)
                if occ is None or occ.state != S.EXECUTING or occ.fence != claim.fence:
                    results.append(False)
                    continue
                payer, payee = accounts.get(claim.payer_id), accounts.get(claim.payee_id)
                if payer is None or payee is None:
                    results.append(UnknownAccount("payer or payee account no longer exists"))
                    continue
                if payer.currency != payment.currency or payee.currency != payment.currency:
                    held = f"{payer.currency}/{payee.currency}"
                    results.append(
                        CurrencyMismatch(f"payment is {payment.currency}, accounts hold {held}")
                    )
                    continue
                if balance[payer.id] < payment.amount:
                    results.append(InsufficientFunds(f"insufficient funds in {payer.name!r}"))
                    continue
                if balance[payee.id] + payment.amount > MAX_BALANCE:
                    limit = format_amount(MAX_BALANCE, payment.currency)
                    results.append(
                        BalanceLimit(
                            f"{payee.name!r} would hold more than the balance limit of {limit} "
                            f"{payment.currency}"
                        )
                    )
                    continue
                for account_id, amount in ((payer.id, -payment.amount), (payee.id, payment.amount)):
                    balance[account_id] += amount
                    delta[account_id] = delta.get(account_id, 0) + amount
                ledger += entries(occ.key, payer.id, payee.id, payment.amount, occ.id, now)
                after = replace(
                    occ, state=S.SUCCEEDED, reason=None, finished_at=now, reference=occ.key
                )
                changes.append(transitions.Change(occ, after))
                locked[occ.id] = after
                outbox.extend(claim.on_success)
                results.append(True)
            if changes:
                transitions.apply(conn, changes, now)
                write_entries(conn, ledger)
                enqueue_notifications(conn, outbox, now)
                changed = [{"b_id": i, "b_delta": d} for i, d in sorted(delta.items()) if d]
                if changed:
                    conn.execute(_balance_update(), changed)
            return results

    def finish(
        self, claim: Claim, target: OccurrenceState, now: datetime, reason: str | None
    ) -> bool:
        """executing -> succeeded | retrying | failed | unknown | needs_review, only while the
        claim's fence is current. One occurrence and no notifications: the worker finishes
        through finish_many, whose items carry the notifications to commit with the change."""
        return self.finish_many([Finish(claim, target, reason)], now)[0]

    def finish_many(self, items: Sequence[Finish], now: datetime) -> list[bool]:
        """finish() for a batch, in one transaction; one result per item, in order."""
        with self.db.engine.begin() as conn:
            locked = transitions.lock(conn, {i.claim.occurrence.id for i in items})
            results: list[bool] = []
            changes: list[transitions.Change] = []
            outbox: list[OutboxMessage] = []
            for item in items:
                occ = locked.get(item.claim.occurrence.id)
                if occ is None or occ.state != S.EXECUTING or occ.fence != item.claim.fence:
                    results.append(False)
                    continue
                after = replace(
                    occ,
                    state=item.target,
                    reason=item.reason,
                    finished_at=now if item.target in FINAL_STATES else None,
                    reference=item.reference or occ.reference,
                    resolve_at=item.resolve_at if item.target == S.UNKNOWN else None,
                    resolve_checks=0,
                    attempts=occ.attempts - 1 if item.uncount else occ.attempts,
                )
                changes.append(transitions.Change(occ, after))
                locked[occ.id] = after
                outbox.extend(item.outbox)
                results.append(True)
            transitions.apply(conn, changes, now)
            enqueue_notifications(conn, outbox, now)
            return results

    # -- unknown outcomes ---------------------------------------------------------------------

    def lease_unknowns(self, now: datetime, lease: timedelta, limit: int = 50) -> list[Claim]:
        """Unknown occurrences whose next check is due, with their payments; their next check
        is pushed `lease` ahead so that a concurrent resolver skips them, and one that dies
        mid-check leaves them to be checked again when the lease runs out.

        A read-only look comes first: the resolver asks every second, and with nothing due it
        must not open a write transaction (on SQLite one takes the database's write lock)."""
        occ = t.occurrences.c
        with self.db.reading() as conn:
            due = conn.execute(
                select(occ.id)
                .where(occ.state == S.UNKNOWN.value)
                .where(occ.resolve_at <= now)
                .limit(1)
            ).first()
        if due is None:
            return []
        with self.db.engine.begin() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    select(occ.id)
                    .where(occ.state == S.UNKNOWN.value)
                    .where(occ.resolve_at <= now)
                    .order_by(occ.resolve_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ]
            if not ids:
                return []
            conn.execute(
                update(t.occurrences)
                .where(occ.id.in_(ids))
                .where(occ.state == S.UNKNOWN.value)
                .values(resolve_at=now + lease)
            )
            return [self._claim_of(row) for row in conn.execute(claim_rows(), {"ids": ids})]

    def unresolved(self, occurrence_id: int) -> Claim:
        """An occurrence in unknown or needs_review with its payment, for a manual resolve."""
        existing_id(occurrence_id, "occurrence")
        with self.db.reading() as conn:
            row = conn.execute(claim_rows(), {"ids": [occurrence_id]}).first()
        if row is None:
            raise NotFound(f"no occurrence with id {occurrence_id}")
        return self._claim_of(row)

    def recheck_later(self, claim: Claim, at: datetime, reason: str) -> bool:
        """The provider could not tell yet: ask again at `at` (state stays unknown)."""
        occ = t.occurrences.c
        with self.db.engine.begin() as conn:
            done = conn.execute(
                update(t.occurrences)
                .where(occ.id == claim.occurrence.id)
                .where(occ.state == S.UNKNOWN.value)
                .where(occ.fence == claim.fence)
                .values(resolve_at=at, resolve_checks=occ.resolve_checks + 1, reason=reason)
            )
            return bool(done.rowcount == 1)

    def resolve(
        self,
        claim: Claim,
        target: OccurrenceState,
        now: datetime,
        reason: str | None,
        outbox: Sequence[OutboxMessage] = (),
        reference: str | None = None,
        then: AfterWrite | None = None,
    ) -> bool:
        """unknown | needs_review -> succeeded | failed | queued | needs_review, by the resolver
        or by a person; False when the occurrence was no longer in the state the claim saw."""
        with self.db.engine.begin() as conn:
            occ = transitions.lock(conn, [claim.occurrence.id]).get(claim.occurrence.id)
            if occ is None or occ.state != claim.occurrence.state or occ.fence != claim.fence:
                return False
            after = replace(
                occ,
                state=target,
                reason=reason,
                resolve_at=None,
                finished_at=now if target in FINAL_STATES else None,
                reference=reference or occ.reference,
                # Sent again by a person's decision: a fresh start, not the takeovers that
                # parked it (else a retry of a takeover-parked one is parked again at once).
                takeovers=0 if target == OccurrenceState.QUEUED else occ.takeovers,
            )
            transitions.apply(conn, [transitions.Change(occ, after)], now)
            enqueue_notifications(conn, outbox, now)
            if then is not None:
                then(conn, target)
            return True

    def _claim_of(self, row: Any) -> Claim:
        occ = occurrence_from(row)
        return Claim(
            occ,
            payment_from(row, prefix="p_"),
            occ.fence,
            occ.attempts,
            row.p_payer_id,
            row.p_payee_id,
        )
