"""Where a recurring payment's series goes next: one function over its two kinds of rule.

A cron payment's occurrence is due at its nominal instant; a calendar rule's (see
paysched.recurrence) may be moved off a holiday, so each step yields the nominal instant (the
occurrence's identity and where the series continues from) and the due instant (when it runs).
"""

from __future__ import annotations

import functools
from datetime import datetime

from paysched.recurrence import Due, Recurrence, next_due, preview
from paysched.schedules import next_cron


@functools.lru_cache(maxsize=4096)
def _recurrence(text: str) -> Recurrence:
    # The scheduler steps a series once per occurrence: parse each stored rule once.
    return Recurrence.from_json(text)


def following(
    cron: str | None, timezone: str | None, recurrence: str | None, nominal: datetime | None
) -> Due | None:
    """The occurrence after the one at `nominal` (None: the first one after `now`-like bound
    given as `nominal`); None when the series has ended or the payment is one-time."""
    if recurrence:
        return next_due(_recurrence(recurrence), nominal)
    if cron and nominal is not None:
        at = next_cron(cron, nominal, timezone)
        return Due(nominal=at, due=at)
    return None


def first(
    cron: str | None, timezone: str | None, recurrence: str | None, now: datetime
) -> Due | None:
    """A new recurring payment's first occurrence: the first one after `now`."""
    return following(cron, timezone, recurrence, now)


def upcoming(
    cron: str | None, timezone: str | None, recurrence: str | None, nominal: datetime, count: int
) -> list[Due]:
    """The next `count` occurrences after the one at `nominal` (InvalidInput naming "count"
    when a calendar rule's would take more search than one request may do)."""
    if recurrence:
        # One walk for them all, within one request's budget: `following` per occurrence
        # would spend a whole date's search on each of them.
        return preview(_recurrence(recurrence), nominal, count)
    out: list[Due] = []
    at: datetime | None = nominal
    while at is not None and len(out) < count:
        step = following(cron, timezone, recurrence, at)
        if step is None:
            break
        out.append(step)
        at = step.nominal
    return out
