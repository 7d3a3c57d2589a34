"""The read path: what paysched shows, read from the store alone (no queue, executor,
scheduler or notifier), the same code whoever asks.

Each read is a function of the Store, run where its caller reads: the CLI's quick commands
(`list`, `show`, `notifications list`, `stats`) call it on the store of db.setup.open_store,
on the calling thread, without building App (which imports bullmq, httpx and the executors,
~0.3 s); the HTTP API and the dashboard through App.read, on App's database threads, one
trip each. A method of one of the Store's parts is a read too
(`app.db(app.store.accounts.get_account, name)`); this module holds the reads that put several
of them together into what is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from paysched.config import Settings
from paysched.db.actions import Action, ActionFilter, actions_of, find_actions
from paysched.db.outbox import STATES, Outbox
from paysched.db.store import Store
from paysched.db.store.finds import PaymentFilter
from paysched.domain import Notification, Payment, PaymentState
from paysched.errors import InvalidInput


async def stats(settings: Settings) -> dict[str, Any]:
    """`paysched stats`: what App.stats reports, from the database and one Redis script.

    The database first, as App.open did: an unavailable database or a schema behind is
    reported before Redis is looked at."""
    from paysched.backends import REDIS_PROBE_TIMEOUT_S, probe_redis, resolve_redis
    from paysched.db.setup import open_store
    from paysched.heartbeat import processes_key, read_processes
    from paysched.queue_counts import queue_counts
    from paysched.redis_client import redis_client

    with open_store(settings, migrate=False) as store:
        occurrences = store.reads.occurrence_counts()
        notifications = Outbox(store.engine).counts()
    url, embedded = resolve_redis(settings)
    try:
        # The same PING App.open makes: the same one-line reasons (unreachable, credentials).
        await probe_redis(url)
        client = redis_client(
            url, socket_connect_timeout=REDIS_PROBE_TIMEOUT_S, socket_timeout=REDIS_PROBE_TIMEOUT_S
        )
        try:
            queue = await queue_counts(client, settings.queue_name, settings.queue_prefix)
            key = processes_key(settings.queue_prefix, settings.queue_name)
            processes = await read_processes(client, key, datetime.now(UTC))
        finally:
            await client.aclose()
    finally:
        if embedded is not None:
            embedded.stop()
    return {
        "queue": queue,
        "occurrences": occurrences,
        "notifications": notifications,
        "processes": processes,
    }


DETAIL_PAGE = 20  # occurrences in a payment's detail (GET /v1/payments/{id}, the dashboard)


def payment_detail(
    store: Store,
    payment_id: int,
    page: int | None = None,
    before: tuple[datetime, int] | None = None,
) -> dict[str, Any]:
    """A payment as `paysched show --json` and GET /v1/payments/{id} show it: its
    occurrences with every attempt and transition, and its notifications.

    With `page`, the newest `page` occurrences due before `before` (a (due_at, id) position),
    and `occurrences_next_cursor`, the position of the oldest shown as a cursor for the next
    page when older ones follow: a few statements and a bounded body however long the
    payment's history. Without (`paysched show`), all of them, oldest first."""
    from paysched.cursors import encode, occurrence_position
    from paysched.db.actions import actions_page
    from paysched.views import notification_view, occurrence_view, payment_view, status_of

    found = store.reads.payment_history(payment_id, page=page, before=before)
    occs = found.occurrences
    view = payment_view(found.payment)
    view["status"] = status_of(found.payment, found.last_state, found.unfinished)
    view["occurrences"] = [occurrence_view(o, found.transitions[o.id]) for o in occs]
    if page is not None:
        more = found.more and bool(occs)
        view["occurrences_next_cursor"] = encode(occurrence_position(occs[-1])) if more else None
    view["notifications"] = [notification_view(n) for n in reversed(found.notifications)]
    view |= actions_page(found.actions, page)
    return view


def payment_rows(
    store: Store, payments: Sequence[Payment], now: datetime | None = None
) -> list[dict[str, Any]]:
    """Payments as `paysched list` and GET /v1/payments show them: each with its status (what
    became of it) and what needs attention (views.attention_view: late, unknown,
    needs_review), read for the whole page in two queries. `now`: the caller's clock."""
    from paysched.views import LATE_AFTER, attention_view, payment_status, payment_view

    now = now or datetime.now(UTC)
    # Only a done payment's status depends on its occurrences (views.payment_status).
    done = [p.id for p in payments if p.state == PaymentState.DONE]
    states = store.reads.occurrence_states(done)
    flagged = store.reads.needing_attention([p.id for p in payments], now - LATE_AFTER)
    return [
        payment_view(p)
        | {"status": payment_status(p, states.get(p.id, []))}
        | attention_view(p, flagged[p.id], now)
        for p in payments
    ]


def find_payments(
    store: Store,
    f: PaymentFilter,
    limit: int,
    before: int | None = None,
    after: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A page of payments as GET /v1/payments and the dashboard's list show them: `data`
    (payment_rows: each with its status), `older` (the `before` of the next page, or None),
    `newer` (the `after` of the page before, or None), `matched` (what the search text was
    taken for) and `searched_down_to` (the lowest payment id a stretched search looked at:
    see db/store/finds.py)."""
    found = store.finds.find_payments(f, limit, before, after)
    return {
        "data": payment_rows(store, found.payments, now),
        "older": found.older,
        "newer": found.newer,
        "matched": found.matched,
        "searched_down_to": found.searched_down_to,
    }


def notifications(
    store: Store,
    state: str | None,
    payment_id: int | None,
    limit: int,
    before: int | None = None,
) -> list[Notification]:
    """Notifications, newest first, as `paysched notifications list` and GET /v1/notifications
    show them: in `state` (pending, sent or dead: else InvalidInput naming it), of a payment,
    with ids below `before`."""
    if state is not None and state not in STATES:
        raise InvalidInput("state", f"expected pending, sent or dead, got {state!r}")
    return Outbox(store.engine).list(state, payment_id, limit, before)


def actions(store: Store, f: ActionFilter, limit: int, before: int | None = None) -> list[Action]:
    """The audit log as `paysched actions`, GET /v1/actions and the dashboard's page show it:
    what `f` lets through, newest first, ids below `before` (see db.actions.find_actions)."""
    return find_actions(store.engine, f, limit, before)


def payment_actions(
    store: Store, payment_id: int, limit: int, before: int | None = None
) -> list[Action]:
    """What people did to a payment, newest first (GET /v1/payments/{id}/actions); NotFound
    if there is no such payment."""
    return actions_of(store.engine, payment_id, limit, before)


def notification(store: Store, notification_id: int) -> Notification:
    """One notification; NotFound if there is none with this id."""
    return Outbox(store.engine).get(notification_id)
