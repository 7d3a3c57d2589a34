"""What the dashboard shows, read through the same code as the API and the CLI."""

from __future__ import annotations

from typing import Any

from paysched.app import App
from paysched.direct import payment_rows
from paysched.domain import OccurrenceState
from paysched.views import notification_view, occurrence_view

LATEST = 20  # payments on the overview
ATTENTION = 50  # of each kind of thing a person must look at


async def overview(app: App) -> dict[str, Any]:
    """`paysched stats` (queue, occurrences, notifications), the latest payments, and what
    needs a person: needs_review and unknown occurrences, dead notifications."""
    stats = await app.stats()
    store, outbox = app.store, app.outbox
    assert outbox is not None  # App.open always makes it

    def read() -> dict[str, Any]:  # one trip to the thread pool
        def by_state(state: OccurrenceState) -> list[dict[str, Any]]:
            return [occurrence_view(o, []) for o in store.list_occurrences(ATTENTION, state=state)]

        return {
            "payments": payment_rows(store, store.list_payments(LATEST)),
            "needs_review": by_state(OccurrenceState.NEEDS_REVIEW),
            "unknown": by_state(OccurrenceState.UNKNOWN),
            "dead": [notification_view(n) for n in outbox.list("dead", None, ATTENTION)],
        }

    return stats | await app.db(read)
