"""Repository of the `actions` table: who did what to a payment, and when.

A person's action is recorded by the transaction that makes the change (`Acting.then`, the
`then=` hook every write of the store takes), so there is no change without its actor and no
actor without its change: a refused action (409) or a rolled-back one writes nothing, and an
idempotent replay, which changes nothing, records nothing either. The log line follows the
commit (`Acting.logged`), so the log never names an action that did not happen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, insert, select

from paysched.actors import Actor, ActorKind, Via
from paysched.db import tables as t
from paysched.db.engine import reading
from paysched.db.store.base import AfterWrite, after, existing_id
from paysched.domain import Account, Notification
from paysched.errors import NotFound

log = logging.getLogger("paysched.actions")
# Free text of a person's (a resolve's reason): in the history, not repeated in every log line.
UNLOGGED = frozenset({"reason"})


@dataclass(frozen=True, slots=True)
class Subject:
    """What an action was done to, as the change's result tells it."""

    payment_id: int | None = None
    occurrence_id: int | None = None
    detail: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    at: datetime
    actor: Actor
    action: str
    payment_id: int | None
    occurrence_id: int | None
    detail: dict[str, Any]


class Acting:
    """One action a person takes: `then(...)` is the change's hook that writes its row (and
    runs the hook it wraps, e.g. an idempotency key's completion, in the same transaction);
    `logged()`, once the change is committed, writes its log line."""

    def __init__(
        self, actor: Actor, action: str, at: datetime, subject: Callable[[Any], Subject]
    ) -> None:
        self.actor = actor
        self.action = action
        self.at = at
        self.subject = subject
        self.done: Subject | None = None

    def then(self, then: AfterWrite | None = None) -> AfterWrite:
        def write(conn: Connection, result: Any) -> None:
            subject = self.subject(result)
            record(conn, self.actor, self.action, self.at, subject)
            # A write run again (a deadlock's victim) records again, in its new transaction.
            self.done = subject
            after(then, conn, result)

        return write

    def logged(self) -> None:
        subject = self.done
        if subject is None:  # the change never reached its hook: nothing happened
            return
        shown = {k: v for k, v in subject.detail.items() if k not in UNLOGGED}
        log.info(
            "%s%s%s by %s via %s%s",
            self.action,
            "" if subject.payment_id is None else f" payment {subject.payment_id}",
            "" if subject.occurrence_id is None else f" occurrence {subject.occurrence_id}",
            self.actor.describe(),
            self.actor.via,
            "".join(f" {k}={v}" for k, v in shown.items()),
            extra={"payment_id": subject.payment_id},
        )


def account_subject(account: Account) -> Subject:
    return Subject(detail={"account": account.name, "currency": account.currency})


def deposit_subject(minor: int) -> Callable[[Account], Subject]:
    """The amount in minor units, as everything of money is kept."""
    return lambda a: Subject(
        detail={"account": a.name, "amount_minor": minor, "currency": a.currency}
    )


def notification_subject(n: Notification) -> Subject:
    return Subject(n.payment_id, n.occurrence_id, {"notification": n.id})


def key_subject(scope: str | None) -> Callable[[int], Subject]:
    """An API key created (with its scope) or revoked: the key acted on, not the actor."""
    return lambda kid: Subject(detail={"api_key": kid} | ({"scope": scope} if scope else {}))


def record(conn: Connection, actor: Actor, action: str, at: datetime, subject: Subject) -> None:
    conn.execute(
        insert(t.actions).values(
            at=at,
            actor_kind=actor.kind,
            api_key_id=actor.api_key_id,
            actor_name=actor.name,
            via=actor.via,
            action=action,
            payment_id=subject.payment_id,
            occurrence_id=subject.occurrence_id,
            detail=json.dumps(subject.detail, sort_keys=True) if subject.detail else "",
        )
    )


def read_actions(
    conn: Connection, payment_id: int, limit: int | None = None, before: int | None = None
) -> list[Action]:
    """A payment's actions, newest first: `limit` of them (all if None) with ids below
    `before` (a page's position). One index range scan (payment_id, id), on the caller's
    connection (a payment's detail reads them with the rest of it, at one instant)."""
    a = t.actions.c
    query = select(t.actions).where(a.payment_id == payment_id).order_by(a.id.desc())
    if before is not None:
        query = query.where(a.id < before)
    if limit is not None:
        query = query.limit(limit)
    return [action_from(row) for row in conn.execute(query)]


def actions_of(
    engine: Engine, payment_id: int, limit: int | None = None, before: int | None = None
) -> list[Action]:
    """read_actions on a connection of its own; NotFound if there is no such payment."""
    existing_id(payment_id, "payment")
    with reading(engine) as conn:
        found = conn.execute(select(t.payments.c.id).where(t.payments.c.id == payment_id))
        if found.first() is None:
            raise NotFound(f"no payment with id {payment_id}")
        return read_actions(conn, payment_id, limit, before)


def actions_page(found: Sequence[Action], page: int | None) -> dict[str, Any]:
    """`actions` (views) and `actions_next_cursor`: of `found`, read with `page` + 1 (the
    extra one only says that older ones follow), the first `page`; all of them if None."""
    from paysched.cursors import encode

    shown = list(found[:page])
    more = page is not None and len(found) > page and bool(shown)
    return {"actions": views(shown), "actions_next_cursor": encode(shown[-1].id) if more else None}


def action_from(row: Any) -> Action:
    actor = Actor(
        cast(ActorKind, row.actor_kind), row.actor_name, cast(Via, row.via), row.api_key_id
    )
    detail = json.loads(row.detail) if row.detail else {}
    return Action(row.id, row.at, actor, row.action, row.payment_id, row.occurrence_id, detail)


def action_view(action: Action) -> dict[str, Any]:
    """As GET /v1/payments/{id} and `paysched show --json` give it."""
    from paysched.views import iso

    actor = action.actor
    return {
        "id": action.id,
        "at": iso(action.at),
        "action": action.action,
        "actor": {"kind": actor.kind, "api_key_id": actor.api_key_id, "name": actor.name},
        "via": actor.via,
        "occurrence_id": action.occurrence_id,
        "detail": action.detail,
        "summary": summary(action),
    }


PAST = {
    "create": "created",
    "cancel": "cancelled",
    "pause": "paused",
    "resume": "resumed",
    "skip_next": "skipped the next occurrence",
    "resolve": "resolved",
    "retry_notification": "sent a notification again",
}


def summary(action: Action) -> str:
    """One line for a person: `cancelled by key #3 ops-alice via dashboard`."""
    what = PAST.get(action.action, action.action)
    if action.action == "resolve" and "outcome" in action.detail:
        what = f"resolved as {action.detail['outcome']}"
    return f"{what} by {action.actor.describe()} via {action.actor.via}"


def views(actions: Sequence[Action]) -> list[dict[str, Any]]:
    return [action_view(a) for a in actions]
