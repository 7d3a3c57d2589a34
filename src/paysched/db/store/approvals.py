"""Approvals: a person decides on an occurrence awaiting approval, or its timeout does.

An occurrence of a payment that requires approval is created `awaiting_approval` (see
payments._materialize_found) and no claim takes it. `decide` moves it on, once: approved ->
scheduled (the caller enqueues it as a materialized one is), rejected -> cancelled. The move
is a compare-and-set on the state, under the occurrence's row lock, so a double approve, or an
approve racing a reject or the timeout, acts once and the other is told what happened instead.

Four eyes: whoever created the payment (its `create` action: the same API key, or the same
command-line or Python user) cannot approve it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection, and_, or_, select

from paysched.actors import Actor
from paysched.db import tables as t
from paysched.db.store import transitions
from paysched.db.store.accounts import account_named
from paysched.db.store.base import (
    AfterWrite,
    Database,
    after,
    enqueue_notifications,
    existing_id,
    retried_if_victim,
)
from paysched.db.store.payments import read_payment
from paysched.db.store.rows import account_from, occurrence_from
from paysched.domain import Account, Occurrence, OccurrenceState, OutboxMessage, Payment
from paysched.errors import Conflict, InvalidInput, NotFound

S = OccurrenceState
# The sweep moves at most this many expired occurrences per transaction.
EXPIRE_BATCH = 500
# The notifications of occurrences the approval timeout moved, written in that transaction.
ExpiredOutbox = Callable[[Connection, Sequence[Occurrence]], Sequence[OutboxMessage]]


class FourEyes(Conflict):
    """The person deciding is the one who created the payment."""


@dataclass(frozen=True, slots=True)
class Decided:
    occurrence: Occurrence  # after the decision
    payment: Payment


def timeout_text(seconds: int) -> str:
    """`2h`, `90m`, `45s`, `1d`: how a payment's approval timeout reads in a reason."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def already(occ: Occurrence) -> str:
    """Why an occurrence no longer waits for a decision, for the one who came too late."""
    what = {
        S.SCHEDULED: "already approved",
        S.QUEUED: "already approved",
        S.EXECUTING: "already approved",
        S.SUCCEEDED: "already approved and paid",
        S.CANCELLED: "already rejected or cancelled",
        S.SKIPPED: "skipped",
        S.FAILED: "failed",
        S.MISSED: "missed",
    }.get(occ.state, occ.state.value)
    return f"occurrence {occ.key} is {what} ({occ.state.value}); it no longer awaits approval"


class Approvals:
    """Deciding occurrences awaiting approval, the approval timeout, who approves."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @retried_if_victim
    def decide(
        self,
        occurrence_id: int,
        approve: bool,
        actor: Actor,
        now: datetime,
        reason: str = "",
        then: AfterWrite | None = None,
    ) -> Decided:
        """Approve (-> scheduled) or reject (-> cancelled, with `reason`) an occurrence
        awaiting approval; Conflict if it awaits none any more, FourEyes if `actor` created
        its payment. `then` runs in the transaction with the Decided."""
        existing_id(occurrence_id, "occurrence")
        if not approve and not reason.strip():
            raise InvalidInput("reason", "say why it is rejected (kept in its history)")
        with self.db.engine.begin() as conn:
            occ = transitions.lock(conn, [occurrence_id]).get(occurrence_id)
            if occ is None:
                raise NotFound(f"no occurrence with id {occurrence_id}")
            if occ.state != S.AWAITING_APPROVAL:
                raise Conflict(already(occ))
            if created_by(conn, occ.payment_id, actor):
                raise FourEyes(
                    f"{actor.describe()} created payment {occ.payment_id}: its occurrences are "
                    "approved or rejected by someone else (four eyes)"
                )
            who = actor.describe()
            if approve:
                note = f"approved by {who}"
                decided = replace(occ, state=S.SCHEDULED, reason=None)
            else:
                note = f"rejected by {who}: {reason.strip()}"
                decided = replace(occ, state=S.CANCELLED, reason=note, finished_at=now)
            transitions.apply(conn, [transitions.Change(occ, decided, note=note)], now)
            result = Decided(decided, read_payment(conn, occ.payment_id))
            after(then, conn, result)
            return result

    def expire_approvals(
        self, now: datetime, outbox: ExpiredOutbox | None = None, limit: int = EXPIRE_BATCH
    ) -> list[Occurrence]:
        """Move the occurrences awaiting approval past their deadline to skipped or failed
        (their payment's approval_on_timeout), with their notifications; the ones moved.
        A read-only look first: every tick calls this."""
        o, p = t.occurrences.c, t.payments.c
        due = (
            select(o.id)
            .where(o.state == S.AWAITING_APPROVAL.value, o.approval_deadline <= now)
            .order_by(o.approval_deadline, o.id)
            .limit(limit)
        )
        with self.db.reading() as conn:
            ids = [r.id for r in conn.execute(due)]
        if not ids:
            return []
        with self.db.engine.begin() as conn:
            locked = transitions.lock(conn, ids)
            expired = [
                occ
                for occ in locked.values()
                if occ.state == S.AWAITING_APPROVAL
                and occ.approval_deadline is not None
                and occ.approval_deadline <= now
            ]
            settings = {
                r.id: (r.approval_on_timeout, r.approval_timeout_s)
                for r in conn.execute(
                    select(p.id, p.approval_on_timeout, p.approval_timeout_s).where(
                        p.id.in_({occ.payment_id for occ in expired})
                    )
                )
            }
            changes = []
            for occ in expired:
                on_timeout, seconds = settings[occ.payment_id]
                target = S.FAILED if on_timeout == "fail" else S.SKIPPED
                why = f"no approval within {timeout_text(seconds or 0)}"
                changes.append(
                    transitions.Change(occ, replace(occ, state=target, reason=why, finished_at=now))
                )
            transitions.apply(conn, changes, now)
            moved = [c.after for c in changes]
            if outbox is not None and moved:
                enqueue_notifications(conn, outbox(conn, moved), now)
            return moved

    def approver_accounts(self, channel: str, chat_id: str) -> list[Account]:
        """The accounts a chat is linked to as their approver."""
        cl = t.chat_links.c
        with self.db.reading() as conn:
            rows = conn.execute(
                select(t.accounts)
                .join(t.chat_links, cl.account_id == t.accounts.c.id)
                .where(cl.channel == channel, cl.chat_id == chat_id, cl.role == "approver")
                .order_by(t.accounts.c.name)
            )
            return [account_from(r) for r in rows]

    def payer_id_of(self, occurrence_id: int) -> tuple[Occurrence, int]:
        """An occurrence and its payment's paying account's id; NotFound if none."""
        existing_id(occurrence_id, "occurrence")
        o = t.occurrences.c
        query = (
            select(t.occurrences, t.payments.c.payer_id)
            .join(t.payments, t.payments.c.id == o.payment_id)
            .where(o.id == occurrence_id)
        )
        with self.db.reading() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no occurrence with id {occurrence_id}")
        return occurrence_from(row), int(row.payer_id)

    def set_approval_above(
        self, name: str, minor: int | None, then: AfterWrite | None = None
    ) -> Account:
        """The amount above which the account's new payments require approval (None: off).
        Payments already created keep what they were created with."""
        if minor is not None and minor < 0:
            raise InvalidInput("approval_above", "must not be negative")
        with self.db.engine.begin() as conn:
            account = account_named(conn, name)
            conn.execute(
                t.accounts.update()
                .where(t.accounts.c.id == account.id)
                .values(approval_above=minor)
            )
            account = replace(account, approval_above=minor)
            after(then, conn, account)
            return account


def created_by(conn: Connection, payment_id: int, actor: Actor) -> bool:
    """Did `actor` create the payment (its `create` action)? The same API key, or the same
    kind and name for a command line or Python user."""
    a = t.actions.c
    same = (
        a.api_key_id == actor.api_key_id
        if actor.kind == "api_key" and actor.api_key_id is not None
        else and_(a.actor_kind == actor.kind, a.actor_name == actor.name)
    )
    query = select(a.id).where(a.payment_id == payment_id, a.action == "create", or_(same))
    return conn.execute(query.limit(1)).first() is not None


__all__ = ["Approvals", "Decided", "FourEyes", "created_by", "timeout_text"]
