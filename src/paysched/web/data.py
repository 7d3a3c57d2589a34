"""What the dashboard shows, read through the same code as the API and the CLI."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from paysched.app import App
from paysched.cursors import encode
from paysched.db.actions import ActionFilter, logged_view
from paysched.db.store import Store, finds
from paysched.db.store.approvals import timeout_text
from paysched.db.store.finds import LedgerEntry, PaymentFilter
from paysched.domain import OccurrenceState, format_amount
from paysched.reads import (
    DETAIL_PAGE,
    actions,
    find_payments,
    notifications,
    payment_detail,
    payment_rows,
)
from paysched.views import (
    LATE_AFTER,
    account_view,
    duration_text,
    iso,
    notification_view,
    occurrence_view,
)
from paysched.web.times import next_due

LATEST = 20  # payments on the overview
ATTENTION = 50  # of each kind of thing a person must look at
# The oldest due occurrence's age shown as a warning past this: a worker starts a due one
# within milliseconds, so a minute means workers down, saturated or stuck.
OLDEST_DUE_WARN_S = 60.0
CHART_WINDOW = timedelta(hours=1)


async def overview(app: App) -> dict[str, Any]:
    """`paysched stats` (queue, occurrences, notifications, processes by heartbeat), the
    latest payments (late, unknown, needs_review flagged), the age of the oldest due
    occurrence, and what needs a person: needs_review and unknown occurrences, dead
    notifications."""
    stats = await app.stats()
    now = app.clock.now()

    def read(store: Store) -> dict[str, Any]:  # one trip to the thread pool
        def by_state(state: OccurrenceState) -> list[dict[str, Any]]:
            return [
                occurrence_view(o, []) for o in store.reads.list_occurrences(ATTENTION, state=state)
            ]

        oldest = store.reads.oldest_due(now)
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        return {
            "payments": payment_rows(store, store.payments.list_payments(LATEST), now),
            "needs_review": by_state(OccurrenceState.NEEDS_REVIEW),
            "unknown": by_state(OccurrenceState.UNKNOWN),
            "dead": [notification_view(n) for n in notifications(store, "dead", None, ATTENTION)],
            "oldest_due": None
            if oldest is None
            else {
                "due_at": iso(oldest),
                "age": duration_text(round(age * 1000)),
                "age_s": age,
                "warn": age > OLDEST_DUE_WARN_S,
            },
        }

    return stats | await app.read(read)


async def activity_chart(app: App) -> dict[str, Any]:
    """The overview's chart of the last hour: start lateness and outcomes per minute (one
    indexed read, see Reads.recent_activity), rendered as inline SVG."""
    from paysched.web.chart import activity_svg

    now = app.clock.now()
    found = await app.db(app.store.reads.recent_activity, now - CHART_WINDOW)
    return {"chart": activity_svg(found, now, CHART_WINDOW)}


# -- finding payments, accounts ---------------------------------------------------------------

PAGE = 25  # payments on a page of the list, and ledger entries on an account's page
ACCOUNT_PAYMENTS = 10  # the account's latest payments on its page (the list has the rest)
# The list's filters, as its form sends them (every field, empty when unused).
FILTERS = ("q", "status", "state", "occurrence", "account", "currency", "due_from", "due_before")


def list_url(form: dict[str, str], **paging: int) -> str:
    """The list with the same filters (the empty ones left out) and a page position."""
    from urllib.parse import urlencode

    kept = {k: v for k, v in form.items() if v} | {k: str(v) for k, v in paging.items()}
    return "/dashboard/payments" + (f"?{urlencode(kept)}" if kept else "")


async def payment_list(
    app: App, f: PaymentFilter, form: dict[str, str], before: int | None, after: int | None
) -> dict[str, Any]:
    """A page of the list, newest first, with the links to the pages either side."""
    found = await app.read(find_payments, f, PAGE, before, after, app.clock.now())
    return found | {
        "stretch": finds.STRETCH,  # read when used: a test narrows it
        "older_url": None if found["older"] is None else list_url(form, before=found["older"]),
        "newer_url": None if found["newer"] is None else list_url(form, after=found["newer"]),
        "newest_url": list_url(form) if before is not None or after is not None else None,
    }


def _entry_view(e: LedgerEntry, currency: str) -> dict[str, Any]:
    return {
        "id": e.id,
        "amount": format_amount(e.amount, currency),
        "transfer_id": e.transfer_id,
        "payment_id": e.payment_id,
        "at": iso(e.created_at),
    }


async def account_page(app: App, name: str, ledger_before: int | None) -> dict[str, Any]:
    """An account: its balance, its ledger entries newest first (a page below entry id
    `ledger_before`), and its latest payments as payer or payee."""

    def read(store: Store) -> dict[str, Any]:
        account = store.accounts.get_account(name)  # NotFound: a 404 page
        entries = store.finds.ledger_entries(account.name, PAGE + 1, ledger_before)
        shown = entries[:PAGE]
        mine = PaymentFilter(account=account.name)
        payments = find_payments(store, mine, ACCOUNT_PAYMENTS, now=app.clock.now())
        return {
            "account": account_view(account),
            "settings": {
                "remind": None
                if account.remind is None
                else timeout_text(int(account.remind.total_seconds())),
                "approval_above": None
                if account.approval_above is None
                else format_amount(account.approval_above, account.currency),
            },
            "entries": [_entry_view(e, account.currency) for e in shown],
            "ledger_older": shown[-1].id if len(entries) > PAGE else None,
            "ledger_paged": ledger_before is not None,
            "payments": payments["data"],
            "more_payments": payments["older"] is not None,
            "payments_url": list_url({"account": account.name}),
        }

    return await app.read(read)


# -- the audit log ------------------------------------------------------------------------------

# The actions page's filters, as its form sends them (as GET /v1/actions takes them).
ACTION_FILTERS = ("actor", "action", "payment_id", "since", "before")


def actions_url(form: dict[str, str], cursor: str | None = None) -> str:
    """The actions page with the same filters (the empty ones left out), from `cursor`."""
    from urllib.parse import urlencode

    kept = {k: v for k, v in form.items() if v} | ({"cursor": cursor} if cursor else {})
    return "/dashboard/actions" + (f"?{urlencode(kept)}" if kept else "")


async def action_list(
    app: App, f: ActionFilter, form: dict[str, str], before: int | None
) -> dict[str, Any]:
    """A page of the whole log, newest first (GET /v1/actions' read), with the next's link."""
    found = await app.read(actions, f, PAGE + 1, before)
    shown = found[:PAGE]
    older = encode(shown[-1].id) if len(found) > PAGE else None
    return {
        "data": [logged_view(a) for a in shown],
        "older_url": None if older is None else actions_url(form, older),
        "newest_url": actions_url(form) if before is not None else None,
    }


# An occurrence that waits to start, past due by more than LATE_AFTER, is late (as the list's
# payment_rows says); the states the payment page marks so.
WAITING_TO_START = ("scheduled", "queued")


async def payment_page(
    app: App, payment_id: int, before: tuple[datetime, int] | None
) -> dict[str, Any]:
    """A payment's page (and its live updates): its detail, its next due times, and each of
    its occurrences that is late to start marked with `late_ms` (how long past due), read
    from the detail itself: no extra query."""
    detail = await app.read(payment_detail, payment_id, DETAIL_PAGE, before)
    now = app.clock.now()
    # A paused or cancelled payment's due occurrences wait on purpose: not late.
    waiting = detail["state"] in ("active", "done")
    for o in detail["occurrences"]:
        late = now - datetime.fromisoformat(o["due_at"])
        marked = waiting and o["state"] in WAITING_TO_START and o["lateness_ms"] is None
        o["late_ms"] = round(late.total_seconds() * 1000) if marked and late > LATE_AFTER else None
    return {"p": detail, "upcoming": await next_due(app, detail)}
