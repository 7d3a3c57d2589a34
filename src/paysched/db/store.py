"""The repository: the only module that issues SQL.

Methods are synchronous and short; async callers run them in a thread. Every occurrence state
change is a compare-and-set — on rows locked in the same transaction, checking state and fence —
recorded in `transitions` within the same transaction. Driver errors are translated into
paysched errors here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from paysched.clock import to_ms
from paysched.db import tables as t
from paysched.db.engine import READ_ONLY, make_engine, migrate
from paysched.domain import (
    FINAL_STATES,
    PENDING_STATES,
    Account,
    Occurrence,
    OccurrenceState,
    OutboxMessage,
    Payment,
    PaymentState,
    Transition,
    can_transition,
    occurrence_key,
)
from paysched.errors import (
    BackendUnavailable,
    Conflict,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    PermanentError,
    UnknownAccount,
)
from paysched.schedules import next_cron

S = OccurrenceState


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker holds after a successful claim: the occurrence, its payment and the fence."""

    occurrence: Occurrence
    payment: Payment
    fence: int
    attempt: int  # the database's count of claims, including this one
    payer_id: int
    payee_id: int
    # Notifications to commit with the move to succeeded (set by the worker; executors that
    # settle themselves pass them on, so they commit in the same transaction as the money).
    on_success: tuple[OutboxMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class Finish:
    """One occurrence's move out of executing, for Store.finish_many."""

    claim: Claim
    target: OccurrenceState
    reason: str | None
    outbox: tuple[OutboxMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class LedgerReport:
    balanced: bool
    problems: list[str]


def _external_name(currency: str) -> str:
    return f"@external:{currency}"


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def connect(cls, url: str, pool_size: int = 10) -> Store:
        return cls(make_engine(url, pool_size=pool_size))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        try:
            migrate(self.engine)
        except (OperationalError, SAInterfaceError) as exc:
            raise BackendUnavailable(f"database unavailable: {_short(exc)}") from exc

    def ping(self) -> None:
        try:
            with self._reading() as conn:
                conn.execute(select(1))
        except (OperationalError, SAInterfaceError) as exc:
            raise BackendUnavailable(f"database unavailable: {_short(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # -- accounts ---------------------------------------------------------------------------

    def create_account(self, name: str, currency: str, now: datetime) -> Account:
        if not name or name.startswith("@") or len(name) > 100:
            raise InvalidInput("name", "must be 1-100 characters and not start with '@'")
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t.accounts).values(
                        name=name, currency=currency, kind="user", balance=0, created_at=now
                    )
                )
                return self._account(conn, name)
        except IntegrityError:
            raise Conflict(f"account {name!r} already exists") from None

    def get_account(self, name: str) -> Account:
        with self._reading() as conn:
            return self._account(conn, name)

    def list_accounts(self) -> list[Account]:
        with self._reading() as conn:
            rows = conn.execute(
                select(t.accounts).where(t.accounts.c.kind == "user").order_by(t.accounts.c.name)
            )
            return [_account_from(r) for r in rows]

    def deposit(self, name: str, amount: int, now: datetime) -> Account:
        """Money entering paysched: the currency's external account is the other side."""
        if amount <= 0:
            raise InvalidInput("amount", "must be greater than zero")
        with self.engine.begin() as conn:
            account = self._account(conn, name)
            external = self._external_account(conn, account.currency, now)
            transfer_id = f"deposit-{account.id}-{to_ms(now)}-{amount}"
            self._post(conn, transfer_id, external, account.id, amount, None, now)
            return self._account(conn, name)

    def _account(self, conn: Connection, name: str) -> Account:
        row = conn.execute(select(t.accounts).where(t.accounts.c.name == name)).first()
        if row is None:
            raise NotFound(f"no account named {name!r}")
        return _account_from(row)

    def _external_account(self, conn: Connection, currency: str, now: datetime) -> int:
        name = _external_name(currency)
        values = dict(name=name, currency=currency, kind="external", balance=0, created_at=now)
        conn.execute(self._insert_ignore(t.accounts, ["name"]).values(**values))
        found = conn.execute(select(t.accounts.c.id).where(t.accounts.c.name == name)).scalar_one()
        return int(found)

    def _post(
        self,
        conn: Connection,
        transfer_id: str,
        debit_id: int,
        credit_id: int,
        amount: int,
        occurrence_id: int | None,
        now: datetime,
    ) -> None:
        conn.execute(
            update(t.accounts)
            .where(t.accounts.c.id == debit_id)
            .values(balance=t.accounts.c.balance - amount)
        )
        conn.execute(
            update(t.accounts)
            .where(t.accounts.c.id == credit_id)
            .values(balance=t.accounts.c.balance + amount)
        )
        conn.execute(
            insert(t.ledger_entries),
            [
                dict(transfer_id=transfer_id, account_id=debit_id, amount=-amount,
                     occurrence_id=occurrence_id, created_at=now),
                dict(transfer_id=transfer_id, account_id=credit_id, amount=amount,
                     occurrence_id=occurrence_id, created_at=now),
            ],
        )  # fmt: skip

    # -- payments ---------------------------------------------------------------------------

    def create_payment(
        self,
        *,
        payer: str,
        payee: str,
        amount: int,
        currency: str,
        due_at: datetime | None,
        cron: str | None,
        timezone: str | None,
        memo: str,
        now: datetime,
        notify: Sequence[str] = (),
    ) -> Payment:
        if (due_at is None) == (cron is None):
            raise InvalidInput("schedule", "give exactly one of a due time or a cron expression")
        if payer == payee:
            raise InvalidInput("to", "payer and payee must be different accounts")
        if amount <= 0:
            raise InvalidInput("amount", "must be greater than zero")
        first_due = due_at if due_at is not None else next_cron(cron or "", now, timezone)
        with self.engine.begin() as conn:
            accounts = {}
            for field, name in (("from", payer), ("to", payee)):
                try:
                    accounts[field] = self._account(conn, name)
                except NotFound:
                    raise InvalidInput(field, f"no account named {name!r}") from None
                if accounts[field].currency != currency:
                    raise InvalidInput(
                        field,
                        f"account {name!r} holds {accounts[field].currency}, payment is {currency}",
                    )
            payment_id = conn.execute(
                insert(t.payments)
                .values(
                    payer_id=accounts["from"].id, payee_id=accounts["to"].id, amount=amount,
                    currency=currency, state=PaymentState.ACTIVE.value, due_at=due_at, cron=cron,
                    timezone=timezone, next_due_at=first_due, memo=memo, created_at=now,
                    notify=json.dumps(list(notify)),
                    updated_at=now,
                )
                .returning(t.payments.c.id)
            ).scalar_one()  # fmt: skip
            return self._payment(conn, int(payment_id))

    def get_payment(self, payment_id: int) -> Payment:
        with self._reading() as conn:
            return self._payment(conn, payment_id)

    def list_payments(self, limit: int = 100, state: str | None = None) -> list[Payment]:
        query = _payment_select().order_by(t.payments.c.id.desc()).limit(limit)
        if state:
            query = query.where(t.payments.c.state == state)
        with self._reading() as conn:
            return [_payment_from(r) for r in conn.execute(query)]

    def _payment(self, conn: Connection, payment_id: int) -> Payment:
        row = conn.execute(_payment_select().where(t.payments.c.id == payment_id)).first()
        if row is None:
            raise NotFound(f"no payment with id {payment_id}")
        return _payment_from(row)

    def cancel_payment(self, payment_id: int, now: datetime, reason: str) -> list[Occurrence]:
        """Cancel the payment and every occurrence not yet final. Returns those occurrences."""
        with self.engine.begin() as conn:
            payment = self._payment(conn, payment_id)
            if payment.state == PaymentState.CANCELLED:
                raise Conflict(f"payment {payment_id} is already cancelled")
            rows = conn.execute(
                select(t.occurrences)
                .where(t.occurrences.c.payment_id == payment_id)
                .where(t.occurrences.c.state.in_([s.value for s in PENDING_STATES]))
                .with_for_update()
            ).all()
            if payment.state == PaymentState.DONE and not rows:
                raise Conflict(f"payment {payment_id} has already run; nothing left to cancel")
            conn.execute(
                update(t.payments)
                .where(t.payments.c.id == payment_id)
                .values(state=PaymentState.CANCELLED.value, next_due_at=None, updated_at=now)
            )
            cancelled = []
            for row in rows:
                occ = _occurrence_from(row)
                if self._cas(conn, occ, S.CANCELLED, now, reason, finished=True):
                    cancelled.append(occ)
            return cancelled

    # -- scheduler --------------------------------------------------------------------------

    def materialize_due(
        self, now: datetime, horizon: datetime, payment_ids: Sequence[int] | None = None,
        limit: int = 1000,
    ) -> list[Occurrence]:  # fmt: skip
        """Create the occurrences of every active payment due at or before `horizon`.

        One transaction. Idempotent and safe under concurrent schedulers: occurrences are unique
        per (payment, due time) and `next_due_at` only advances by compare-and-set. Returns the
        occurrences this call created, in due order.
        """
        with self.engine.begin() as conn:
            query = (
                select(t.payments.c.id, t.payments.c.next_due_at, t.payments.c.cron,
                       t.payments.c.timezone)
                .where(t.payments.c.next_due_at <= horizon)
                .where(t.payments.c.state == PaymentState.ACTIVE.value)
                .order_by(t.payments.c.next_due_at)
                .limit(limit)
            )  # fmt: skip
            if payment_ids is not None:
                query = query.where(t.payments.c.id.in_(list(payment_ids)))
            rows: list[dict[str, Any]] = []
            advances: list[dict[str, Any]] = []
            for pid, due, cron, tz in conn.execute(query).all():
                next_due = due
                count = 0
                while next_due is not None and next_due <= horizon and count < limit:
                    key = occurrence_key(pid, to_ms(next_due))
                    rows.append(
                        dict(payment_id=pid, due_at=next_due, key=key, state=S.SCHEDULED.value,
                             attempts=0, fence=0, created_at=now, updated_at=now)
                    )  # fmt: skip
                    next_due = next_cron(cron, next_due, tz) if cron else None
                    count += 1
                done = next_due is None
                advances.append(
                    dict(b_id=pid, b_due=due, b_next=next_due,
                         b_state=PaymentState.DONE.value if done else PaymentState.ACTIVE.value)
                )  # fmt: skip
            if not rows:
                return []
            # One multi-row INSERT for the whole batch. No conflict target: UNIQUE(key) must be
            # skipped too, not only UNIQUE(payment_id, due_at) — PostgreSQL skips conflicts on
            # the named index only, so a concurrent scheduler's insert of the same occurrence
            # raised UniqueViolation on the key (found by the chaos harness). RETURNING yields
            # only the rows this call inserted: what another scheduler created is not ours.
            inserted = conn.execute(
                self._insert_ignore(t.occurrences, None).returning(*t.occurrences.c), rows
            ).all()
            created = [_occurrence_from(r) for r in inserted]
            if created:
                conn.execute(
                    insert(t.transitions),
                    [
                        dict(occurrence_id=o.id, at=now, from_state=None,
                             to_state=S.SCHEDULED.value, attempt=0, reason=None)
                        for o in created
                    ],
                )  # fmt: skip
            # next_due_at advances by compare-and-set: a concurrent scheduler that advanced it
            # first wins, and this update then matches nothing.
            conn.execute(
                update(t.payments)
                .where(t.payments.c.id == bindparam("b_id"))
                .where(t.payments.c.next_due_at == bindparam("b_due"))
                .where(t.payments.c.state == PaymentState.ACTIVE.value)
                .values(
                    next_due_at=bindparam("b_next"), state=bindparam("b_state"), updated_at=now
                ),
                advances,
            )
        created.sort(key=lambda o: (o.due_at, o.id))
        return created

    def mark_queued(self, occurrence_ids: Iterable[int], now: datetime) -> int:
        """scheduled -> queued for occurrences whose job is now in the queue."""
        ids = list(occurrence_ids)
        if not ids:
            return 0
        with self.engine.begin() as conn:
            rows = conn.execute(
                update(t.occurrences)
                .where(t.occurrences.c.id.in_(ids))
                .where(t.occurrences.c.state == S.SCHEDULED.value)
                .values(state=S.QUEUED.value, updated_at=now)
                .returning(t.occurrences.c.id, t.occurrences.c.attempts)
            ).all()
            if rows:
                conn.execute(
                    insert(t.transitions),
                    [
                        dict(occurrence_id=r[0], at=now, from_state=S.SCHEDULED.value,
                             to_state=S.QUEUED.value, attempt=r[1], reason=None)
                        for r in rows
                    ],
                )  # fmt: skip
            return len(rows)

    def pending_occurrences(
        self, horizon: datetime, updated_before: datetime | None = None, limit: int = 10_000
    ) -> list[Occurrence]:
        """Non-final occurrences due by `horizon` (reconcile's input), earliest first."""
        query = (
            select(t.occurrences)
            .where(t.occurrences.c.state.in_([s.value for s in PENDING_STATES]))
            .where(t.occurrences.c.due_at <= horizon)
            .order_by(t.occurrences.c.due_at)
            .limit(limit)
        )
        if updated_before is not None:
            query = query.where(t.occurrences.c.updated_at <= updated_before)
        with self._reading() as conn:
            return [_occurrence_from(r) for r in conn.execute(query)]

    # -- worker -----------------------------------------------------------------------------

    def claim(self, occurrence_id: int, now: datetime) -> Claim | None:
        """Take the occurrence for execution (bumping the fence), or None if it is final/gone."""
        return self.claim_many([occurrence_id], now)[0]

    def claim_many(self, occurrence_ids: Sequence[int], now: datetime) -> list[Claim | None]:
        """claim() for a batch, in one transaction; one result per id, in order.

        Three statements whatever the batch size: the occurrences with their payments
        (row-locked), the compare-and-sets and their history. The rows are locked (SQLite: the
        write lock of BEGIN IMMEDIATE), so what is read here is what the updates change. An id
        twice in a batch behaves as two claims one after the other: the second takes over.
        """
        with self.engine.begin() as conn:
            rows = conn.execute(_claim_rows(), {"ids": sorted(set(occurrence_ids))}).all()
            found = {row.id: row for row in rows}
            current: dict[int, Occurrence] = {}
            results: list[Claim | None] = []
            updates: list[dict[str, Any]] = []
            history: list[dict[str, Any]] = []
            for occurrence_id in occurrence_ids:
                row = found.get(occurrence_id)
                occ = current.get(occurrence_id) or (_occurrence_from(row) if row else None)
                if row is None or occ is None or not can_transition(occ.state, S.EXECUTING):
                    results.append(None)
                    continue
                attempt = occ.attempts + 1
                reason = "taken over after its worker stalled" if occ.state == S.EXECUTING else None
                claimed = replace(
                    occ, state=S.EXECUTING, attempts=attempt, fence=occ.fence + 1,
                    started_at=occ.started_at or now,
                    reason=occ.reason if reason is None else reason,
                )  # fmt: skip
                current[occurrence_id] = claimed
                updates.append(
                    dict(b_id=occ.id, b_attempts=attempt, b_fence=claimed.fence,
                         b_started=claimed.started_at, b_reason=claimed.reason, b_now=now)
                )  # fmt: skip
                history.append(_history(occ.id, now, occ.state, S.EXECUTING, attempt, reason))
                payment = _payment_from(row, prefix="p_")
                results.append(
                    Claim(claimed, payment, claimed.fence, attempt, row.p_payer_id, row.p_payee_id)
                )
            if updates:
                conn.execute(_claim_update(), updates)
                conn.execute(insert(t.transitions), history)
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
        with self.engine.begin() as conn:
            fences = _lock_fences(conn, {c.occurrence.id for c in claims})
            account_ids = {c.payer_id for c in claims} | {c.payee_id for c in claims}
            accounts = {
                row.id: row
                for row in conn.execute(_locked_accounts(), {"ids": sorted(account_ids)})
            }
            balance = {account_id: int(row.balance) for account_id, row in accounts.items()}
            delta: dict[int, int] = {}
            results: list[bool | PermanentError] = []
            done: list[dict[str, Any]] = []
            history: list[dict[str, Any]] = []
            entries: list[dict[str, Any]] = []
            outbox: list[OutboxMessage] = []
            for claim in claims:
                occ, payment = claim.occurrence, claim.payment
                if fences.get(occ.id) != (S.EXECUTING.value, claim.fence):
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
                for account_id, amount in ((payer.id, -payment.amount), (payee.id, payment.amount)):
                    balance[account_id] += amount
                    delta[account_id] = delta.get(account_id, 0) + amount
                    entries.append(
                        dict(transfer_id=occ.key, account_id=account_id, amount=amount,
                             occurrence_id=occ.id, created_at=now)
                    )  # fmt: skip
                fences[occ.id] = (S.SUCCEEDED.value, claim.fence)
                done.append({"b_id": occ.id, "b_now": now})
                history.append(_history(occ.id, now, S.EXECUTING, S.SUCCEEDED, occ.attempts, None))
                outbox.extend(claim.on_success)
                results.append(True)
            if done:
                conn.execute(_succeed_update(), done)
                conn.execute(insert(t.transitions), history)
                conn.execute(insert(t.ledger_entries), entries)
                self._enqueue_notifications(conn, outbox, now)
                changed = [{"b_id": i, "b_delta": d} for i, d in sorted(delta.items()) if d]
                if changed:
                    conn.execute(_balance_update(), changed)
            return results

    def finish(
        self,
        claim: Claim,
        target: OccurrenceState,
        now: datetime,
        reason: str | None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """executing -> succeeded | retrying | failed, only while the claim's fence is current.
        The notifications in `outbox` commit in the same transaction, or not at all."""
        return self.finish_many([Finish(claim, target, reason, tuple(outbox))], now)[0]

    def finish_many(self, items: Sequence[Finish], now: datetime) -> list[bool]:
        """finish() for a batch, in one transaction; one result per item, in order."""
        with self.engine.begin() as conn:
            fences = _lock_fences(conn, {i.claim.occurrence.id for i in items})
            results: list[bool] = []
            updates: list[dict[str, Any]] = []
            history: list[dict[str, Any]] = []
            outbox: list[OutboxMessage] = []
            for item in items:
                occ = item.claim.occurrence
                current = fences.get(occ.id)
                if current != (S.EXECUTING.value, item.claim.fence) or not can_transition(
                    S.EXECUTING, item.target
                ):
                    results.append(False)
                    continue
                final = item.target in FINAL_STATES
                fences[occ.id] = (item.target.value, item.claim.fence)
                updates.append(
                    dict(b_id=occ.id, b_state=item.target.value, b_reason=item.reason,
                         b_finished=now if final else None, b_now=now)
                )  # fmt: skip
                history.append(
                    _history(occ.id, now, S.EXECUTING, item.target, occ.attempts, item.reason)
                )
                outbox.extend(item.outbox)
                results.append(True)
            if updates:
                conn.execute(_finish_update(), updates)
                conn.execute(insert(t.transitions), history)
                self._enqueue_notifications(conn, outbox, now)
            return results

    def _enqueue_notifications(
        self, conn: Connection, outbox: Sequence[OutboxMessage], now: datetime
    ) -> None:
        if not outbox:
            return
        conn.execute(
            self._insert_ignore(t.notifications, ["dedup_key"]),
            [
                dict(dedup_key=msg.dedup_key, payment_id=msg.payment_id,
                     occurrence_id=msg.occurrence_id, event=msg.event, channel=msg.channel,
                     target=msg.target, payload=msg.payload, state="pending", attempts=0,
                     next_attempt_at=now, created_at=now)
                for msg in outbox
            ],
        )  # fmt: skip

    # -- reads ------------------------------------------------------------------------------

    def get_occurrence(self, occurrence_id: int) -> Occurrence:
        with self._reading() as conn:
            return self._occurrence(conn, occurrence_id)

    def occurrences_of(self, payment_id: int) -> list[Occurrence]:
        with self._reading() as conn:
            rows = conn.execute(
                select(t.occurrences)
                .where(t.occurrences.c.payment_id == payment_id)
                .order_by(t.occurrences.c.due_at)
            )
            return [_occurrence_from(r) for r in rows]

    def transitions_of(self, occurrence_ids: Sequence[int]) -> list[Transition]:
        with self._reading() as conn:
            rows = conn.execute(
                select(t.transitions)
                .where(t.transitions.c.occurrence_id.in_(list(occurrence_ids)))
                .order_by(t.transitions.c.id)
            )
            return [
                Transition(
                    occurrence_id=r.occurrence_id, at=r.at,
                    from_state=S(r.from_state) if r.from_state else None,
                    to_state=S(r.to_state), attempt=r.attempt, reason=r.reason,
                )
                for r in rows
            ]  # fmt: skip

    def occurrence_counts(self) -> dict[str, int]:
        with self._reading() as conn:
            rows = conn.execute(
                select(t.occurrences.c.state, func.count()).group_by(t.occurrences.c.state)
            )
            counts = {s.value: 0 for s in OccurrenceState}
            counts.update({state: int(n) for state, n in rows})
            return counts

    def all_occurrences(self, payment_ids: Sequence[int] | None = None) -> list[Occurrence]:
        query = select(t.occurrences).order_by(t.occurrences.c.due_at)
        if payment_ids is not None:
            query = query.where(t.occurrences.c.payment_id.in_(list(payment_ids)))
        with self._reading() as conn:
            return [_occurrence_from(r) for r in conn.execute(query)]

    def succeeded_transfer_count(self) -> int:
        with self._reading() as conn:
            n = conn.execute(
                select(func.count(func.distinct(t.ledger_entries.c.occurrence_id)))
            ).scalar_one()
            return int(n)

    def ledger_report(self) -> LedgerReport:
        """Double-entry checks: every transfer sums to zero, every balance equals its entries,
        and each succeeded occurrence moved money exactly once."""
        problems: list[str] = []
        with self._reading() as conn:
            unbalanced = conn.execute(
                select(t.ledger_entries.c.transfer_id, func.sum(t.ledger_entries.c.amount))
                .group_by(t.ledger_entries.c.transfer_id)
                .having(func.sum(t.ledger_entries.c.amount) != 0)
            ).all()
            problems += [f"transfer {tid} sums to {total}" for tid, total in unbalanced]
            sums = (
                select(
                    t.ledger_entries.c.account_id, func.sum(t.ledger_entries.c.amount).label("s")
                )
                .group_by(t.ledger_entries.c.account_id)
                .subquery()
            )
            mismatched = conn.execute(
                select(t.accounts.c.name, t.accounts.c.balance, sums.c.s)
                .select_from(t.accounts.outerjoin(sums, sums.c.account_id == t.accounts.c.id))
                .where(t.accounts.c.balance != func.coalesce(sums.c.s, 0))
            ).all()
            problems += [f"account {n} balance {b} != entries {s}" for n, b, s in mismatched]
            succeeded = conn.execute(
                select(func.count()).where(t.occurrences.c.state == S.SUCCEEDED.value)
            ).scalar_one()
            with_entries = conn.execute(
                select(func.count(func.distinct(t.ledger_entries.c.occurrence_id)))
            ).scalar_one()
            if succeeded != with_entries:
                problems.append(f"{succeeded} succeeded occurrences but {with_entries} transfers")
        return LedgerReport(balanced=not problems, problems=problems)

    # -- helpers ----------------------------------------------------------------------------

    def _reading(self) -> Connection:
        """A connection for reads only (never blocked by a writer on SQLite's WAL)."""
        return self.engine.connect().execution_options(**{READ_ONLY: True})

    def _insert_ignore(self, table: Any, conflict_columns: list[str] | None) -> Any:
        """INSERT ... ON CONFLICT [(conflict_columns)] DO NOTHING; None: on any unique index."""
        if self.dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)

    def _occurrence(self, conn: Connection, occurrence_id: int) -> Occurrence:
        row = conn.execute(select(t.occurrences).where(t.occurrences.c.id == occurrence_id)).first()
        if row is None:
            raise NotFound(f"no occurrence with id {occurrence_id}")
        return _occurrence_from(row)

    def _cas(
        self,
        conn: Connection,
        occ: Occurrence,
        target: OccurrenceState,
        now: datetime,
        reason: str | None,
        *,
        finished: bool = False,
        attempts: int | None = None,
        fence: int | None = None,
    ) -> bool:
        """Compare-and-set one occurrence from its observed state to `target`, with history."""
        if not can_transition(occ.state, target):
            return False
        values: dict[str, Any] = {"state": target.value, "updated_at": now}
        if reason is not None or target in FINAL_STATES:
            values["reason"] = reason
        if finished:
            values["finished_at"] = now
        if attempts is not None:
            values["attempts"] = attempts
            values["fence"] = occ.fence + 1
            values["started_at"] = occ.started_at or now
        conditions = [t.occurrences.c.id == occ.id, t.occurrences.c.state == occ.state.value]
        if fence is not None:
            conditions.append(t.occurrences.c.fence == fence)
        done = conn.execute(update(t.occurrences).where(and_(*conditions)).values(**values))
        if done.rowcount != 1:
            return False
        attempt = attempts if attempts is not None else occ.attempts
        self._record(conn, occ.id, now, occ.state, target, attempt, reason)
        return True

    def _record(
        self, conn: Connection, occurrence_id: int, now: datetime,
        source: OccurrenceState | None, target: OccurrenceState, attempt: int, reason: str | None,
    ) -> None:  # fmt: skip
        conn.execute(
            insert(t.transitions).values(
                occurrence_id=occurrence_id, at=now,
                from_state=source.value if source else None, to_state=target.value,
                attempt=attempt, reason=reason,
            )
        )  # fmt: skip


def _payment_select() -> Any:
    payer = t.accounts.alias("payer")
    payee = t.accounts.alias("payee")
    return select(
        t.payments, payer.c.name.label("payer_name"), payee.c.name.label("payee_name")
    ).select_from(
        t.payments.join(payer, payer.c.id == t.payments.c.payer_id).join(
            payee, payee.c.id == t.payments.c.payee_id
        )
    )


def _history(
    occurrence_id: int, now: datetime, source: OccurrenceState | None, target: OccurrenceState,
    attempt: int, reason: str | None,
) -> dict[str, Any]:  # fmt: skip
    """A transitions row."""
    return dict(occurrence_id=occurrence_id, at=now, from_state=source.value if source else None,
                to_state=target.value, attempt=attempt, reason=reason)  # fmt: skip


# -- the worker's hot-path statements, built once ------------------------------------------------
# Building a statement (aliases, labels, its cache key) cost more CPU than executing it: the
# profile of a busy worker had _claim_select alone at 2 % of the process. Each takes its ids as
# an expanding parameter, its values as bound parameters.


@functools.cache
def _claim_rows() -> Any:
    return (
        _claim_select()
        .where(t.occurrences.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(t.occurrences.c.id)
    )


@functools.cache
def _locked_fences() -> Any:
    occ = t.occurrences.c
    return (
        select(occ.id, occ.state, occ.fence)
        .where(occ.id.in_(bindparam("ids", expanding=True)))
        .order_by(occ.id)
        .with_for_update()
    )


def _lock_fences(conn: Connection, ids: set[int]) -> dict[int, tuple[str, int]]:
    """(state, fence) of each occurrence, row-locked until the transaction ends."""
    rows = conn.execute(_locked_fences(), {"ids": sorted(ids)})
    return {row.id: (row.state, row.fence) for row in rows}


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
def _claim_update() -> Any:
    return (
        update(t.occurrences)
        .where(t.occurrences.c.id == bindparam("b_id"))
        .values(
            state=S.EXECUTING.value, attempts=bindparam("b_attempts"), fence=bindparam("b_fence"),
            started_at=bindparam("b_started"), reason=bindparam("b_reason"),
            updated_at=bindparam("b_now"),
        )
    )  # fmt: skip


@functools.cache
def _succeed_update() -> Any:
    return (
        update(t.occurrences)
        .where(t.occurrences.c.id == bindparam("b_id"))
        .values(state=S.SUCCEEDED.value, reason=None, finished_at=bindparam("b_now"),
                updated_at=bindparam("b_now"))
    )  # fmt: skip


@functools.cache
def _finish_update() -> Any:
    return (
        update(t.occurrences)
        .where(t.occurrences.c.id == bindparam("b_id"))
        .values(state=bindparam("b_state"), reason=bindparam("b_reason"),
                finished_at=bindparam("b_finished"), updated_at=bindparam("b_now"))
    )  # fmt: skip


@functools.cache
def _balance_update() -> Any:
    return (
        update(t.accounts)
        .where(t.accounts.c.id == bindparam("b_id"))
        .values(balance=t.accounts.c.balance + bindparam("b_delta"))
    )


def _claim_select() -> Any:
    """An occurrence with its payment (payment columns prefixed p_), the occurrence row-locked."""
    payer = t.accounts.alias("payer")
    payee = t.accounts.alias("payee")
    return (
        select(
            t.occurrences, *(c.label(f"p_{c.name}") for c in t.payments.c),
            payer.c.name.label("p_payer_name"), payee.c.name.label("p_payee_name"),
        )
        .select_from(
            t.occurrences.join(t.payments, t.payments.c.id == t.occurrences.c.payment_id)
            .join(payer, payer.c.id == t.payments.c.payer_id)
            .join(payee, payee.c.id == t.payments.c.payee_id)
        )
        .with_for_update(of=t.occurrences)
    )  # fmt: skip


def _payment_from(row: Row[Any], prefix: str = "") -> Payment:
    m = row._mapping
    return Payment(
        id=m[prefix + "id"], payer=m[prefix + "payer_name"], payee=m[prefix + "payee_name"],
        amount=int(m[prefix + "amount"]), currency=m[prefix + "currency"],
        state=PaymentState(m[prefix + "state"]), due_at=m[prefix + "due_at"],
        cron=m[prefix + "cron"], timezone=m[prefix + "timezone"],
        next_due_at=m[prefix + "next_due_at"], memo=m[prefix + "memo"],
        created_at=m[prefix + "created_at"], notify=tuple(json.loads(m[prefix + "notify"] or "[]")),
    )  # fmt: skip


def _occurrence_from(row: Row[Any]) -> Occurrence:
    return Occurrence(
        id=row.id, payment_id=row.payment_id, key=row.key, due_at=row.due_at,
        state=OccurrenceState(row.state), attempts=row.attempts, fence=row.fence,
        reason=row.reason, started_at=row.started_at, finished_at=row.finished_at,
    )  # fmt: skip


def _account_from(row: Row[Any]) -> Account:
    return Account(id=row.id, name=row.name, currency=row.currency, balance=int(row.balance))


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
