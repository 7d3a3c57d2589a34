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
from sqlalchemy.sql.elements import ColumnElement

from paysched.actors import Actor, ActorKind, Via
from paysched.db import tables as t
from paysched.db.engine import reading
from paysched.db.store.base import AfterWrite, after, existing_id
from paysched.domain import MAX_ID, Account, Notification
from paysched.errors import NotFound

log = logging.getLogger("paysched.actions")
# Free text of a person's (a resolve's reason): in the history, not repeated in every log line.
UNLOGGED = frozenset({"reason"})


# Every action a person can take, as recorded (`Acting(actor, <name>, ...)` in app.py and
# paysched.cli): what GET /v1/actions?action= and the dashboard's filter accept.
ACTIONS = (
    "create",
    "cancel",
    "pause",
    "resume",
    "skip_next",
    "skip",
    "resolve",
    "retry_notification",
    "create_account",
    "deposit",
    "create_api_key",
    "revoke_api_key",
    "reconcile",
    "issue_link",
    "unlink_chat",
    "approve",
    "reject",
    "set_account",
)


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


def approval_rule_subject(minor: int | None) -> Callable[[Account], Subject]:
    """An account's approval rule set (minor units) or cleared ('off')."""
    return lambda a: Subject(
        detail={"account": a.name, "approval_above": "off" if minor is None else minor}
    )


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


@dataclass(frozen=True, slots=True)
class ActionFilter:
    """The whole log's filters (paysched.audit.action_filter checks them); None: any."""

    actor_kind: str | None = None
    api_key_id: int | None = None
    action: str | None = None
    payment_id: int | None = None
    since: datetime | None = None  # at or after
    before: datetime | None = None


def find_actions(
    engine: Engine, f: ActionFilter, limit: int, before_id: int | None = None
) -> list[Action]:
    """Every action that `f` lets through, newest first (by id: the order they committed in,
    near enough, and the primary key), `limit` of them with ids below `before_id`.

    A payment's, a key's and an action's filters read their indexes ((payment_id, id),
    (api_key_id, id), (action, id)); the others (`cli`/`python` actors, the time bounds)
    walk the primary key down from the newest, so such a filter that matches only a few old
    rows of a big log reads far."""
    if any(i is not None and i > MAX_ID for i in (f.api_key_id, f.payment_id)):
        return []  # names nothing (and is out of an integer column's range in SQL)
    a = t.actions.c
    where: list[ColumnElement[bool]] = []
    if f.actor_kind is not None:
        where.append(a.actor_kind == f.actor_kind)
    if f.api_key_id is not None:
        where.append(a.api_key_id == f.api_key_id)
    if f.action is not None:
        where.append(a.action == f.action)
    if f.payment_id is not None:
        where.append(a.payment_id == f.payment_id)
    if f.since is not None:
        where.append(a.at >= f.since)
    if f.before is not None:
        where.append(a.at < f.before)
    if before_id is not None:
        where.append(a.id < before_id)
    query = select(t.actions).where(*where).order_by(a.id.desc()).limit(limit)
    with reading(engine) as conn:
        return [action_from(row) for row in conn.execute(query)]


def logged_view(action: Action) -> dict[str, Any]:
    """An action of the whole log: as a payment's, with the payment it was done to."""
    return action_view(action) | {"payment_id": action.payment_id}


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
    "skip": "skipped an occurrence",
    "resolve": "resolved",
    "retry_notification": "sent a notification again",
    "create_account": "created an account",
    "deposit": "deposited",
    "create_api_key": "created an API key",
    "revoke_api_key": "revoked an API key",
    "reconcile": "reconciled with the provider",
    "issue_link": "issued a chat link for",
    "unlink_chat": "unlinked a chat from",
    "approve": "approved an occurrence",
    "reject": "rejected an occurrence",
    "set_account": "changed the settings of",
}


def summary(action: Action) -> str:
    """One line for a person: `cancelled by key #3 ops-alice via dashboard`."""
    what = PAST.get(action.action, action.action)
    if action.action == "resolve" and "outcome" in action.detail:
        what = f"resolved as {action.detail['outcome']}"
    what += _about(action.detail)
    return f"{what} by {action.actor.describe()} via {action.actor.via}"


def _about(detail: dict[str, Any]) -> str:
    """What an action tied to no payment was done to: ` alice`, ` #4 (write)`."""
    if "api_key" in detail:
        return f" #{detail['api_key']}" + (f" ({detail['scope']})" if "scope" in detail else "")
    if "reconciliation" in detail:  # `reconciled ... #7 from ... to ..., settling unknowns`
        settling = ", settling unknown occurrences" if detail.get("resolve") else ""
        return f" #{detail['reconciliation']} from {detail['from']} to {detail['to']}{settling}"
    if "account" not in detail:
        return ""
    if "amount_minor" in detail:
        from paysched.domain import format_amount

        amount = format_amount(int(detail["amount_minor"]), str(detail["currency"]))
        return f" {amount} {detail['currency']} into {detail['account']}"
    return f" {detail['account']}"


def views(actions: Sequence[Action]) -> list[dict[str, Any]]:
    return [action_view(a) for a in actions]
