"""Payments: create, read, cancel, and materialize their occurrences when they fall due.

Lock order, the same in every transaction that takes more than one: payments, then
occurrences (by id), then accounts (by id). A cancel and a materialize both lock the payment
first, so neither can interleave with the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from paysched.clock import to_ms
from paysched.db import tables as t
from paysched.db.store import transitions
from paysched.db.store.accounts import AccountsStore
from paysched.db.store.base import AfterWrite, after, existing_id
from paysched.db.store.rows import occurrence_from, payment_from, payment_select
from paysched.domain import (
    CANCELLABLE_STATES,
    FINAL_STATES,
    MAX_AMOUNT,
    Occurrence,
    OccurrenceState,
    Payment,
    PaymentState,
    format_amount,
    occurrence_key,
    refuse_external,
)
from paysched.errors import Conflict, InvalidInput, NotFound
from paysched.schedules import next_cron

S = OccurrenceState


@dataclass(frozen=True, slots=True)
class CancelResult:
    payment: Payment
    cancelled: list[Occurrence]  # will never execute
    # Already executing, or its outcome is being resolved: money may be on its way, so these
    # finish (or are resolved) and are reported as such.
    in_flight: list[Occurrence]


class PaymentsStore(AccountsStore):
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
        then: AfterWrite | None = None,
    ) -> Payment:
        if (due_at is None) == (cron is None):
            raise InvalidInput("schedule", "give exactly one of a due time or a cron expression")
        if payer == payee:
            raise InvalidInput("to", "payer and payee must be different accounts")
        if amount <= 0:
            raise InvalidInput("amount", "must be greater than zero")
        if amount > MAX_AMOUNT:
            limit = format_amount(MAX_AMOUNT, currency)
            raise InvalidInput("amount", f"at most {limit} {currency} per payment")
        first_due = due_at if due_at is not None else next_cron(cron or "", now, timezone)
        with self.engine.begin() as conn:
            accounts = {}
            for field, name in (("from", payer), ("to", payee)):
                try:
                    accounts[field] = self._account(conn, name)
                except NotFound:
                    raise InvalidInput(field, f"no account named {name!r}") from None
                refuse_external(accounts[field].name, field)
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
            payment = self._payment(conn, int(payment_id))
            after(then, conn, payment)
            return payment

    def get_payment(self, payment_id: int) -> Payment:
        existing_id(payment_id, "payment")
        with self._reading() as conn:
            return self._payment(conn, payment_id)

    def list_payments(
        self, limit: int = 100, state: str | None = None, *, before_id: int | None = None,
        payer: str | None = None, payee: str | None = None, currency: str | None = None,
    ) -> list[Payment]:  # fmt: skip
        """Newest first; `before_id` continues a page (keyset: stable while payments are
        added, unlike an offset)."""
        query = payment_select().order_by(t.payments.c.id.desc()).limit(limit)
        if state:
            query = query.where(t.payments.c.state == state)
        if before_id is not None:
            query = query.where(t.payments.c.id < before_id)
        if currency:
            query = query.where(t.payments.c.currency == currency)
        for column, name in ((t.payments.c.payer_id, payer), (t.payments.c.payee_id, payee)):
            if name is not None:
                named = select(t.accounts.c.id).where(t.accounts.c.name == name)
                query = query.where(column == named.scalar_subquery())
        with self._reading() as conn:
            return [payment_from(r) for r in conn.execute(query)]

    def _payment(self, conn: Connection, payment_id: int) -> Payment:
        row = conn.execute(payment_select().where(t.payments.c.id == payment_id)).first()
        if row is None:
            raise NotFound(f"no payment with id {payment_id}")
        return payment_from(row)

    def cancel_payment(
        self, payment_id: int, now: datetime, reason: str, then: AfterWrite | None = None
    ) -> CancelResult:
        """Cancel the payment and every occurrence that has not started.

        A cancel that commits wins over everything not yet executing: the payment row is locked
        first (a materialize in progress finishes before, and its occurrences are cancelled
        here), and a claim reads the payment under a lock and refuses a cancelled one.
        Occurrences already executing or being resolved are left to finish and reported.
        """
        existing_id(payment_id, "payment")
        with self.engine.begin() as conn:
            locked = conn.execute(
                select(t.payments.c.state)
                .where(t.payments.c.id == payment_id)
                .with_for_update()
            ).first()  # fmt: skip
            if locked is None:
                raise NotFound(f"no payment with id {payment_id}")
            if locked.state == PaymentState.CANCELLED.value:
                raise Conflict(f"payment {payment_id} is already cancelled")
            rows = conn.execute(
                select(t.occurrences.c.id)
                .where(t.occurrences.c.payment_id == payment_id)
                .where(t.occurrences.c.state.not_in([s.value for s in FINAL_STATES]))
            ).all()
            open_ = transitions.lock(conn, [r.id for r in rows])
            cancellable = [o for o in open_.values() if o.state in CANCELLABLE_STATES]
            in_flight = [o for o in open_.values() if o.state not in CANCELLABLE_STATES]
            if locked.state == PaymentState.DONE.value and not cancellable:
                if in_flight:
                    raise Conflict(
                        f"payment {payment_id} is {in_flight[0].state.value} now and cannot be "
                        "cancelled; it will finish"
                    )
                raise Conflict(f"payment {payment_id} has already run; nothing left to cancel")
            conn.execute(
                update(t.payments)
                .where(t.payments.c.id == payment_id)
                .values(state=PaymentState.CANCELLED.value, next_due_at=None, updated_at=now)
            )
            transitions.apply(
                conn,
                [
                    transitions.Change(
                        o, replace(o, state=S.CANCELLED, reason=reason, finished_at=now)
                    )
                    for o in cancellable
                ],
                now,
            )
            result = CancelResult(self._payment(conn, payment_id), cancellable, in_flight)
            after(then, conn, result)
            return result

    # -- scheduler --------------------------------------------------------------------------

    def materialize_due(
        self, now: datetime, horizon: datetime, payment_ids: Sequence[int] | None = None,
        limit: int = 1000,
    ) -> list[Occurrence]:  # fmt: skip
        """Create the occurrences of every active payment due at or before `horizon`.

        One transaction. Idempotent and safe under concurrent schedulers: the payments are
        locked first (another scheduler skips them; a cancel waits for this to commit, then
        cancels what it created), occurrences are unique per (payment, due time) and
        `next_due_at` only advances by compare-and-set. Returns the occurrences this call
        created, in due order.
        """
        with self.engine.begin() as conn:
            query = (
                select(t.payments.c.id, t.payments.c.next_due_at, t.payments.c.cron,
                       t.payments.c.timezone)
                .where(t.payments.c.next_due_at <= horizon)
                .where(t.payments.c.state == PaymentState.ACTIVE.value)
                .order_by(t.payments.c.next_due_at, t.payments.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
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
            created = [occurrence_from(r) for r in inserted]
            transitions.record(
                conn, [transitions.history(o.id, now, None, S.SCHEDULED, 0, None) for o in created]
            )
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
        """scheduled -> queued for occurrences whose job is now in the queue (a compare-and-set
        on the state: whatever moved on meanwhile is left alone)."""
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
            transitions.record(conn, [
                transitions.history(r[0], now, S.SCHEDULED, S.QUEUED, r[1], None) for r in rows
            ])  # fmt: skip
            return len(rows)
