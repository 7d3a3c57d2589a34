"""Payments: create and read them, and materialize their occurrences when they fall due (with
the catch-up policy for what fell due while paysched was down or the payment paused); a
person's cancel, pause, resume and skips are in `control`, the reminder sweep in `reminders`.

Lock order, the same in every transaction that takes more than one: payments, then
occurrences (by id), then accounts (by id). A cancel and a materialize both lock the payment
first, so neither can interleave with the other.

A payment is locked FOR NO KEY UPDATE (what an UPDATE of its columns takes anyway), never FOR
UPDATE: a settle or finish holds its occurrences and then inserts notifications, whose foreign
key share-locks the payment (FOR KEY SHARE). FOR UPDATE conflicts with that, so a cancel
holding the payment and waiting for the occurrence deadlocked with it; FOR NO KEY UPDATE
does not, and still conflicts with a claim's FOR SHARE.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    bindparam,
    insert,
    select,
    update,
)

from paysched import series
from paysched.clock import to_ms
from paysched.db import tables as t
from paysched.db.store import transitions
from paysched.db.store.accounts import account_named
from paysched.db.store.base import (
    AfterWrite,
    Database,
    after,
    enqueue_notifications,
    existing_id,
    insert_ignore,
)
from paysched.db.store.rows import occurrence_from, payment_from, payment_select
from paysched.domain import (
    APPROVAL_POLICIES,
    APPROVAL_TIMEOUT_OUTCOMES,
    CATCHUP_POLICIES,
    MAX_AMOUNT,
    Account,
    Occurrence,
    OccurrenceState,
    OutboxMessage,
    Payment,
    PaymentState,
    format_amount,
    occurrence_key,
    payment_summary,
    refuse_external,
)
from paysched.errors import InvalidInput, NotFound
from paysched.recurrence import Due

S = OccurrenceState
# Due longer ago than this when it is created or resumed: it fell due while paysched was down
# (or the payment paused), not merely inside the scheduler's own tick and look-ahead. The
# default of a store; PAYSCHED_CATCHUP_LATE_AFTER sets it (Store.connect(late_after=...)).
LATE_AFTER = timedelta(minutes=1)
# The outbox rows announcing a missed occurrence (the worker's notification policy).
MissedOutbox = Callable[[Payment, Occurrence], Sequence[OutboxMessage]]


ApprovalOutbox = Callable[[Connection, Sequence[Occurrence]], Sequence[OutboxMessage]]
# What catch-up may mark missed: not started (an occurrence awaiting approval neither).
CATCHABLE = (S.SCHEDULED.value, S.QUEUED.value, S.AWAITING_APPROVAL.value)
AWAITING_NOTE = "awaiting approval: a person other than the payment's creator approves or rejects"


def approval_fields(
    payer: Account,
    amount: int,
    approval: str,
    timeout: timedelta | None,
    on_timeout: str | None,
) -> tuple[str, int | None, str | None]:
    """A new payment's approval columns: what its creator asked for, and `required` whatever
    they asked when the payer's account requires approval above an amount this exceeds."""
    if approval not in APPROVAL_POLICIES:
        raise InvalidInput("approval", f"expected none or required, got {approval!r}")
    if on_timeout is not None and on_timeout not in APPROVAL_TIMEOUT_OUTCOMES:
        raise InvalidInput("on_timeout", f"expected skip or fail, got {on_timeout!r}")
    if timeout is not None and timeout <= timedelta(0):
        raise InvalidInput("approval_timeout", "must be longer than zero")
    if on_timeout is not None and timeout is None:
        raise InvalidInput("on_timeout", "applies only with an approval timeout")
    if payer.approval_above is not None and amount > payer.approval_above:
        approval = "required"
    seconds = None if timeout is None else max(1, int(timeout.total_seconds()))
    return approval, seconds, (on_timeout or "skip") if seconds is not None else None


# The statements of every create (and materialize), built once: building a statement and
# its cache key cost more CPU than running it (a third of a create's, py-spy).
_INSERT_PAYMENT = insert(t.payments).returning(*t.payments.c)
# next_due_at advances by compare-and-set: a concurrent scheduler that advanced it first
# wins, and this update then matches nothing.
_ADVANCE = (
    update(t.payments)
    .where(t.payments.c.id == bindparam("b_id"))
    .where(t.payments.c.next_due_at == bindparam("b_due"))
    .where(t.payments.c.state == PaymentState.ACTIVE.value)
    .values(
        next_due_at=bindparam("b_next"),
        next_nominal_at=bindparam("b_nominal"),
        state=bindparam("b_state"),
        updated_at=bindparam("b_updated"),
    )
)

_MARK_QUEUED = (
    update(t.occurrences)
    .where(t.occurrences.c.id.in_(bindparam("ids", expanding=True)))
    .where(t.occurrences.c.state == S.SCHEDULED.value)
    .values(state=S.QUEUED.value, updated_at=bindparam("b_updated"))
    .returning(t.occurrences.c.id, t.occurrences.c.attempts)
)


@dataclass(frozen=True, slots=True)
class _Named:
    """A row's mapping, as payment_from reads a row."""

    _mapping: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Created:
    payment: Payment  # after its occurrences were made
    occurrences: list[Occurrence]  # as materialize_due returns them
    capped: bool  # more are due than were made: materialize_due makes the rest


class Payments:
    """Payments: create and read them, materialize their occurrences (the scheduler's), mark
    them queued. `approval_outbox` is set by the App (paysched.approvals)."""

    def __init__(self, db: Database, late_after: timedelta = LATE_AFTER) -> None:
        self.db = db
        if late_after <= timedelta(0):
            raise ValueError(f"late_after must be more than 0, got {late_after}")
        # The same in every process of a deployment: resume applies catch-up in the caller's
        # process, materialize in the scheduler's.
        self.late_after = late_after
        self._insert_occurrences: Any = None
        # The "approval needed" notifications of occurrences just created awaiting approval,
        # written in their transaction (set by paysched.approvals; None: none are written).
        self.approval_outbox: ApprovalOutbox | None = None

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
        recurrence: str | None = None,
        catchup: str = "all",
        catchup_window: timedelta | None = None,
        remind: timedelta | None = None,
        approval: str = "none",
        approval_timeout: timedelta | None = None,
        approval_on_timeout: str | None = None,
    ) -> Payment:
        """A new payment, in a transaction of its own; `then` is called in it with the
        payment."""
        fields = dict(
            payer=payer,
            payee=payee,
            amount=amount,
            currency=currency,
            due_at=due_at,
            cron=cron,
            timezone=timezone,
            memo=memo,
            notify=notify,
            recurrence=recurrence,
            catchup=catchup,
            catchup_window=catchup_window,
            remind=remind,
            approval=approval,
            approval_timeout=approval_timeout,
            approval_on_timeout=approval_on_timeout,
        )
        created = self.create_and_materialize(lambda _: fields, now=now, horizon=None, then=then)
        return created.payment

    def create_and_materialize(
        self,
        fields_of: Callable[[Callable[[str], Account]], dict[str, Any]],
        *,
        now: datetime,
        horizon: datetime | None,
        limit: int = 1000,
        missed_outbox: MissedOutbox | None = None,
        first: Callable[[Connection], None] | None = None,
        then: AfterWrite | None = None,
    ) -> Created:
        """A new payment and whatever of it falls due by `horizon`, in ONE transaction: a
        create was five (an idempotency reservation, the payment, a probe and a materialize,
        and a read back), each a pool checkout, a ping, BEGIN and COMMIT, most of
        POST /v1/payments' time. `fields_of(account)` gives the payment's fields (`account`
        reads an account in this transaction: a request naming no currency takes the
        payer's), then `first(conn)` runs (an idempotency key's reservation: after the
        request's own checks, before the store's, as when it was a transaction of its own),
        `then(conn, payment)` runs last. The occurrences come back as materialize_due's do
        (the caller enqueues the scheduled ones); `capped` says the payment has more due by
        `horizon` than `limit`: the rest is for materialize_due."""
        with self.db.engine.begin() as conn:
            account = self._account_of(conn)
            fields = fields_of(account)
            if first is not None:
                first(conn)
            payment = self._create_on(conn, account, now=now, **fields)
            made: list[Occurrence] = []
            due = payment.next_due_at
            if horizon is not None and due is not None and due <= horizon:
                # The payment is this transaction's own: no need to find and lock it.
                window = payment.catchup_window
                found = [
                    (
                        payment.id,
                        due,
                        payment.cron,
                        payment.timezone,
                        payment.recurrence,
                        payment.next_nominal_at,
                        payment.catchup,
                        None if window is None else int(window.total_seconds()),
                        payment.approval,
                        _seconds(payment.approval_timeout),
                    )
                ]
                made, advanced = self._materialize_found(
                    conn, now, horizon, found, limit, missed_outbox
                )
                for step in advanced:  # as the UPDATE it made left the row
                    payment = replace(
                        payment,
                        next_due_at=step["b_next"],
                        next_nominal_at=step["b_nominal"],
                        state=PaymentState(step["b_state"]),
                    )
            after(then, conn, payment)
            return Created(payment, made, capped=len(made) >= limit)

    def _account_of(self, conn: Connection) -> Callable[[str], Account]:
        """Accounts by name on `conn`, each read once (a payment names its payer twice when
        its currency is the payer's)."""
        seen: dict[str, Account] = {}

        def account(name: str) -> Account:
            if name not in seen:
                seen[name] = account_named(conn, name)
            return seen[name]

        return account

    def _create_on(
        self,
        conn: Connection,
        account: Callable[[str], Account],
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
        recurrence: str | None = None,
        catchup: str = "all",
        catchup_window: timedelta | None = None,
        remind: timedelta | None = None,
        approval: str = "none",
        approval_timeout: timedelta | None = None,
        approval_on_timeout: str | None = None,
    ) -> Payment:
        if sum(v is not None for v in (due_at, cron, recurrence)) != 1:
            raise InvalidInput(
                "schedule", "give exactly one of a due time, a cron expression or a rule"
            )
        if catchup not in CATCHUP_POLICIES:
            raise InvalidInput("catchup", f"expected all, latest or none, got {catchup!r}")
        if payer == payee:
            raise InvalidInput("to", "payer and payee must be different accounts")
        if amount <= 0:
            raise InvalidInput("amount", "must be greater than zero")
        if amount > MAX_AMOUNT:
            limit = format_amount(MAX_AMOUNT, currency)
            raise InvalidInput("amount", f"at most {limit} {currency} per payment")
        found = (
            Due(nominal=due_at, due=due_at)
            if due_at is not None
            else series.first(cron, timezone, recurrence, now)
        )
        if found is None:
            raise InvalidInput("rrule", "the rule has no occurrence after now")
        first: Due = found
        accounts = {}
        for field, name in (("from", payer), ("to", payee)):
            try:
                accounts[field] = account(name)
            except NotFound:
                raise InvalidInput(field, f"no account named {name!r}") from None
            refuse_external(accounts[field].name, field)
            if accounts[field].currency != currency:
                raise InvalidInput(
                    field,
                    f"account {name!r} holds {accounts[field].currency}, payment is {currency}",
                )
        approval, timeout_s, on_timeout = approval_fields(
            accounts["from"], amount, approval, approval_timeout, approval_on_timeout
        )
        inserted = conn.execute(
            _INSERT_PAYMENT,
            dict(
                payer_id=accounts["from"].id,
                payee_id=accounts["to"].id,
                amount=amount,
                currency=currency,
                state=PaymentState.ACTIVE.value,
                due_at=due_at,
                cron=cron,
                timezone=timezone,
                next_due_at=first.due,
                memo=memo,
                created_at=now,
                recurrence=recurrence,
                catchup=catchup,
                catchup_window_s=None
                if catchup_window is None
                else int(catchup_window.total_seconds()),
                next_nominal_at=first.nominal if first.nominal != first.due else None,
                notify=json.dumps(list(notify)),
                updated_at=now,
                approval=approval,
                approval_timeout_s=timeout_s,
                approval_on_timeout=on_timeout,
                # None: the payer's default, as it is now (a later change of it is not copied).
                remind_s=_seconds(remind)
                if remind is not None
                else _seconds(accounts["from"].remind),
            ),
        ).one()
        # As read back (the names are the accounts'), without reading it back.
        names = {"payer_name": accounts["from"].name, "payee_name": accounts["to"].name}
        return payment_from(cast(Any, _Named({**inserted._mapping, **names})))

    def get_payment(self, payment_id: int) -> Payment:
        existing_id(payment_id, "payment")
        with self.db.reading() as conn:
            return read_payment(conn, payment_id)

    def job_summaries(self, payment_ids: Sequence[int]) -> dict[int, str]:
        """payment_summary of each of these payments that exists, by id; one query per 1,000.

        Five columns, not payment_from's rows: a burst's tick reads a thousand at a time, and
        whole payments cost five times as much (16 ms a thousand on SQLite, against 3)."""
        payer, payee = t.accounts.alias("payer"), t.accounts.alias("payee")
        p = t.payments.c
        query = select(p.id, p.amount, p.currency, payer.c.name, payee.c.name).select_from(
            t.payments.join(payer, payer.c.id == p.payer_id).join(payee, payee.c.id == p.payee_id)
        )
        out: dict[int, str] = {}
        with self.db.reading() as conn:
            for start in range(0, len(payment_ids), 1000):
                chunk = list(payment_ids[start : start + 1000])
                rows = conn.execute(query.where(p.id.in_(chunk)))
                out.update((row[0], payment_summary(*row)) for row in rows)
        return out

    def list_payments(
        self,
        limit: int = 100,
        state: str | None = None,
        *,
        before_id: int | None = None,
        payer: str | None = None,
        payee: str | None = None,
        currency: str | None = None,
    ) -> list[Payment]:
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
        with self.db.reading() as conn:
            return [payment_from(r) for r in conn.execute(query)]

    # -- scheduler --------------------------------------------------------------------------

    def materialize_due(
        self,
        now: datetime,
        horizon: datetime,
        payment_ids: Sequence[int] | None = None,
        limit: int = 1000,
        missed_outbox: MissedOutbox | None = None,
    ) -> list[Occurrence]:
        """Create the occurrences of every active payment due at or before `horizon`.

        One transaction. Idempotent and safe under concurrent schedulers: the payments are
        locked first (another scheduler skips them; a cancel waits for this to commit, then
        cancels what it created), occurrences are unique by key (payment and nominal instant)
        and `next_due_at` only advances by compare-and-set. Returns the occurrences this call
        created, in due order.

        A read-only look comes first: every tick calls this, and with nothing due it must not
        open a write transaction (on SQLite one takes the database's write lock).
        """
        p = t.payments.c
        probe = (
            select(p.id)
            .where(p.next_due_at <= horizon)
            .where(p.state == PaymentState.ACTIVE.value)
            .limit(1)
        )
        if payment_ids is not None:
            probe = probe.where(p.id.in_(list(payment_ids)))
        with self.db.reading() as conn:
            if conn.execute(probe).first() is None:
                return []
        with self.db.engine.begin() as conn:
            return self._materialize(conn, now, horizon, payment_ids, limit, missed_outbox)

    def _materialize(
        self,
        conn: Connection,
        now: datetime,
        horizon: datetime,
        payment_ids: Sequence[int] | None,
        limit: int,
        missed_outbox: MissedOutbox | None,
    ) -> list[Occurrence]:
        """materialize_due's transaction, on `conn`."""
        p = t.payments.c
        query = (
            select(
                p.id,
                p.next_due_at,
                p.cron,
                p.timezone,
                p.recurrence,
                p.next_nominal_at,
                p.catchup,
                p.catchup_window_s,
                p.approval,
                p.approval_timeout_s,
            )
            .where(t.payments.c.next_due_at <= horizon)
            .where(t.payments.c.state == PaymentState.ACTIVE.value)
            .order_by(t.payments.c.next_due_at, t.payments.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, key_share=True)
        )
        if payment_ids is not None:
            query = query.where(t.payments.c.id.in_(list(payment_ids)))
        return self._materialize_found(
            conn, now, horizon, conn.execute(query), limit, missed_outbox
        )[0]

    def _materialize_found(
        self,
        conn: Connection,
        now: datetime,
        horizon: datetime,
        found: Iterable[Any],
        limit: int,
        missed_outbox: MissedOutbox | None,
    ) -> tuple[list[Occurrence], list[dict[str, Any]]]:
        """The occurrences of the `found` payments (locked, or inserted by this transaction),
        and how each payment advanced (b_id, b_next, b_nominal, b_state)."""
        rows: list[dict[str, Any]] = []
        advances: list[dict[str, Any]] = []
        late: dict[int, tuple[str, int | None]] = {}  # payments with catch-up work
        late_before = now - self.late_after
        awaiting: list[int] = []  # payments whose new occurrences wait for approval
        for pid, due, cron, tz, rule, nominal_at, catchup, window, approval, wait_s in found:
            step: Due | None = Due(nominal=nominal_at or due, due=due)
            first_state = S.SCHEDULED if approval != "required" else S.AWAITING_APPROVAL
            if first_state == S.AWAITING_APPROVAL:
                awaiting.append(pid)
            count = 0
            while step is not None and step.due <= horizon and count < limit:
                # The key is the nominal instant's: moving a payment off a holiday never
                # makes it another occurrence.
                key = occurrence_key(pid, to_ms(step.nominal))
                rows.append(
                    dict(
                        payment_id=pid,
                        due_at=step.due,
                        key=key,
                        state=first_state.value,
                        attempts=0,
                        fence=0,
                        created_at=now,
                        updated_at=now,
                        nominal_at=step.nominal if step.nominal != step.due else None,
                        approval_deadline=None
                        if wait_s is None
                        else step.due + timedelta(seconds=wait_s),
                    )
                )
                if step.due < late_before and (catchup != "all" or window is not None):
                    late[pid] = (catchup, window)
                step = series.following(cron, tz, rule, step.nominal)
                count += 1
            done = step is None
            advances.append(
                dict(
                    b_id=pid,
                    b_due=due,
                    b_next=None if step is None else step.due,
                    b_nominal=None if step is None or step.nominal == step.due else step.nominal,
                    b_state=PaymentState.DONE.value if done else PaymentState.ACTIVE.value,
                )
            )
        if not rows:
            return [], advances
        # One multi-row INSERT for the whole batch, skipping any row whose key (UNIQUE, from
        # the payment and nominal instant) exists: a concurrent scheduler inserted the same
        # occurrence. No conflict target: PostgreSQL skips conflicts on a named index only
        # (naming UNIQUE(payment_id, due_at), which 0005 dropped, let a duplicate key raise
        # UniqueViolation: found by the chaos harness), and any unique index added later is
        # skipped too. RETURNING yields only the rows this call inserted: what another
        # scheduler created is not ours.
        if self._insert_occurrences is None:  # built once: see _INSERT_PAYMENT
            self._insert_occurrences = insert_ignore(
                self.db.dialect, t.occurrences, None
            ).returning(*t.occurrences.c)
        inserted = conn.execute(self._insert_occurrences, rows).all()
        created = [occurrence_from(r) for r in inserted]
        transitions.record(
            conn,
            [
                transitions.history(
                    o.id,
                    now,
                    None,
                    o.state,
                    0,
                    AWAITING_NOTE if o.state == S.AWAITING_APPROVAL else None,
                )
                for o in created
            ],
        )
        conn.execute(_ADVANCE, [a | {"b_updated": now} for a in advances])
        missed = catch_up(conn, late, now, self.late_after, missed_outbox) if late else set()
        if awaiting and self.approval_outbox is not None:
            asked = [o for o in created if o.state == S.AWAITING_APPROVAL and o.id not in missed]
            enqueue_notifications(conn, self.approval_outbox(conn, asked), now)
        # Missed ones are returned too (as missed): the caller enqueues only the scheduled.
        created = [replace(o, state=S.MISSED) if o.id in missed else o for o in created]
        created.sort(key=lambda o: (o.due_at, o.id))
        return created, advances

    def mark_queued(self, occurrence_ids: Iterable[int], now: datetime) -> int:
        """scheduled -> queued for occurrences whose job is now in the queue (a compare-and-set
        on the state: whatever moved on meanwhile is left alone)."""
        ids = list(occurrence_ids)
        if not ids:
            return 0
        with self.db.engine.begin() as conn:
            rows = conn.execute(_MARK_QUEUED, {"ids": ids, "b_updated": now}).all()
            transitions.record(
                conn,
                [transitions.history(r[0], now, S.SCHEDULED, S.QUEUED, r[1], None) for r in rows],
            )
            return len(rows)


def _seconds(window: timedelta | None) -> int | None:
    return None if window is None else int(window.total_seconds())


# What more than one part does with a payment (control, approvals): functions on the caller's
# connection, in its transaction.


def lock_payment(conn: Connection, payment_id: int) -> str:
    """Lock the payment's row (first, in the lock order) and return its state."""
    row = conn.execute(
        select(t.payments.c.state)
        .where(t.payments.c.id == payment_id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: see the module's docstring
    ).first()
    if row is None:
        raise NotFound(f"no payment with id {payment_id}")
    return str(row.state)


def set_payment_state(
    conn: Connection, payment_id: int, target: PaymentState, now: datetime
) -> None:
    """The payment's new state; the caller holds its row lock (`lock_payment`)."""
    conn.execute(
        update(t.payments)
        .where(t.payments.c.id == payment_id)
        .values(state=target.value, updated_at=now)
    )


def read_payment(conn: Connection, payment_id: int) -> Payment:
    """The payment as `conn` sees it; NotFound if none."""
    row = conn.execute(payment_select().where(t.payments.c.id == payment_id)).first()
    if row is None:
        raise NotFound(f"no payment with id {payment_id}")
    return payment_from(row)


def catch_up(
    conn: Connection,
    policies: dict[int, tuple[str, int | None]],
    now: datetime,
    late_after: timedelta,
    missed_outbox: MissedOutbox | None,
) -> set[int]:
    """Apply each payment's catch-up policy to its occurrences that fell due while
    paysched was down or the payment paused (due more than `late_after` ago, not started):
    `all` runs them, `latest` only the most recent, `none` none; any older than the
    payment's window is missed whatever the policy. Returns the ids marked missed."""
    c = t.occurrences.c
    rows = conn.execute(
        select(c.id, c.payment_id)
        .where(c.payment_id.in_(list(policies)))
        .where(c.state.in_(CATCHABLE))
        .where(c.attempts == 0)
        .where(c.due_at < now - late_after)
        .order_by(c.payment_id, c.due_at, c.id)
    ).all()
    locked = transitions.lock(conn, [r.id for r in rows])
    by_payment: dict[int, list[Occurrence]] = {}
    for r in rows:
        occ = locked.get(r.id)
        if occ is not None and occ.state.value in CATCHABLE and occ.attempts == 0:
            by_payment.setdefault(r.payment_id, []).append(occ)
    changes: list[transitions.Change] = []
    for pid, late in by_payment.items():
        policy, window = policies[pid]
        for i, occ in enumerate(late):
            stale = window is not None and occ.due_at < now - timedelta(seconds=window)
            skip = policy == "none" or (policy == "latest" and i < len(late) - 1)
            if stale or skip:
                why = (
                    f"missed: due {occ.due_at.isoformat(timespec='seconds')}, older than "
                    "the catch-up window"
                    if stale
                    else f"missed: catch-up policy {policy!r} while paysched was down or the "
                    "payment paused"
                )
                after_ = replace(occ, state=S.MISSED, reason=why, finished_at=now)
                changes.append(transitions.Change(occ, after_))
    transitions.apply(conn, changes, now)
    if missed_outbox is not None and changes:
        payments = {pid: read_payment(conn, pid) for pid in by_payment}
        messages = [
            m for ch in changes for m in missed_outbox(payments[ch.after.payment_id], ch.after)
        ]
        enqueue_notifications(conn, messages, now)
    return {ch.after.id for ch in changes}
