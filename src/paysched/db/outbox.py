"""Repository of the notification outbox (the rows are written by Store with state changes)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, bindparam, func, select, update

from paysched.db import tables as t
from paysched.db.engine import READ_ONLY
from paysched.db.store.base import AfterWrite, existing_id
from paysched.domain import Notification
from paysched.errors import Conflict, NotFound
from paysched.redaction import redact

STATES = ("pending", "sent", "dead")


# The deliverer's hot statements are built once (building one cost more CPU than running it).


@functools.cache
def _due_look() -> Any:
    n = t.notifications.c
    return (
        select(n.id)
        .where(n.state == "pending")
        .where(n.next_attempt_at <= bindparam("now"))
        .limit(1)
    )


@functools.cache
def _lease(limit: int) -> Any:
    """The first `limit` due notifications (row-locked, skipping those another deliverer
    holds), their next attempt pushed to `until`, returned as they are after it."""
    n = t.notifications.c
    due = (
        select(n.id)
        .where(n.state == "pending")
        .where(n.next_attempt_at <= bindparam("now"))
        .order_by(n.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        update(t.notifications)
        .where(n.id.in_(due.scalar_subquery()))
        .where(n.state == "pending")
        .values(next_attempt_at=bindparam("until"), attempts=n.attempts + 1)
        .returning(*t.notifications.c)
    )


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def lease_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[Notification]:
        """Take up to `limit` pending notifications that are due, pushing their next attempt
        `lease` into the future so that a concurrent deliverer skips them. A deliverer that
        dies mid-send leaves them to be retried when the lease runs out.

        A read-only look comes first: the deliverer asks every second, and with nothing due it
        must not open a write transaction (on SQLite one takes the database's write lock).
        The lease itself is one UPDATE ... RETURNING (it was a select, an update and a select
        again, each built anew: the deliverer cost nearly as much CPU as the claims)."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            due = conn.execute(_due_look(), {"now": now}).first()
        if due is None:
            return []
        with self.engine.begin() as conn:
            rows = conn.execute(_lease(limit), {"now": now, "until": now + lease}).all()
        return sorted((notification_from(r) for r in rows), key=lambda n: n.id)

    def mark_sent(self, notification_ids: Sequence[int], now: datetime) -> None:
        """Record deliveries, in one transaction."""
        if not notification_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(t.notifications)
                .where(t.notifications.c.id.in_(list(notification_ids)))
                .where(t.notifications.c.state == "pending")
                .values(state="sent", sent_at=now, last_error=None)
            )

    def reschedule(self, notification_id: int, next_attempt_at: datetime, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.notifications)
                .where(t.notifications.c.id == notification_id)
                .where(t.notifications.c.state == "pending")
                .values(next_attempt_at=next_attempt_at, last_error=redact(error))
            )

    def mark_dead(self, notification_id: int, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.notifications)
                .where(t.notifications.c.id == notification_id)
                .where(t.notifications.c.state == "pending")
                .values(state="dead", last_error=redact(error))
            )

    def retry(
        self, notification_id: int, now: datetime, then: AfterWrite | None = None
    ) -> Notification:
        """Give a dead notification a fresh set of attempts."""
        existing_id(notification_id, "notification")
        with self.engine.begin() as conn:
            row = conn.execute(
                select(t.notifications).where(t.notifications.c.id == notification_id)
            ).first()
            if row is None:
                raise NotFound(f"no notification with id {notification_id}")
            if row.state != "dead":
                raise Conflict(f"notification {notification_id} is {row.state}, not dead")
            conn.execute(
                update(t.notifications)
                .where(t.notifications.c.id == notification_id)
                .values(state="pending", attempts=0, next_attempt_at=now)
            )
            found = conn.execute(
                select(t.notifications).where(t.notifications.c.id == notification_id)
            ).one()
            result = notification_from(found)
            if then is not None:
                then(conn, result)
            return result

    def get(self, notification_id: int) -> Notification:
        existing_id(notification_id, "notification")
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            row = conn.execute(
                select(t.notifications).where(t.notifications.c.id == notification_id)
            ).first()
        if row is None:
            raise NotFound(f"no notification with id {notification_id}")
        return notification_from(row)

    def list(
        self,
        state: str | None = None,
        payment_id: int | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[Notification]:
        query = select(t.notifications).order_by(t.notifications.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(t.notifications.c.id < before_id)
        if state:
            query = query.where(t.notifications.c.state == state)
        if payment_id is not None:
            query = query.where(t.notifications.c.payment_id == payment_id)
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            return [notification_from(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            rows = conn.execute(
                select(t.notifications.c.state, func.count()).group_by(t.notifications.c.state)
            )
            counts = dict.fromkeys(STATES, 0)
            counts.update({state: int(n) for state, n in rows})
            return counts


def notification_from(row: Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        dedup_key=row.dedup_key,
        payment_id=row.payment_id,
        occurrence_id=row.occurrence_id,
        event=row.event,
        channel=row.channel,
        target=row.target,
        payload=row.payload,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )
