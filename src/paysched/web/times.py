"""How the dashboard writes an instant: in the payment's own time zone, beside UTC.

"2026-12-04 09:00 Europe/Berlin (08:00 UTC)": a person thinks of a payment in the zone it
was scheduled in, and logs, Redis and the API speak UTC. One place, so that every page
writes times the same way; zoneinfo only (the stored instants are UTC-aware).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from paysched.app import App
from paysched.views import iso

# The next due times a recurring payment's page lists.
UPCOMING = 5


def _instant(value: str | datetime) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # stored instants are UTC; never read one as local time
        moment = moment.replace(tzinfo=UTC)
    return moment


def _clock(moment: datetime) -> str:
    """Minutes, and seconds only where there are some: a schedule's 09:00 stays 09:00, an
    attempt that started at 09:00:07 says so."""
    return f"{moment:%H:%M:%S}" if moment.second or moment.microsecond else f"{moment:%H:%M}"


def _zone(name: str | None) -> ZoneInfo | None:
    if not name or name.upper() in ("UTC", "ETC/UTC", "Z"):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # validated on the way in; UTC if it vanished
        return None


def zoned(value: str | datetime | None, timezone: str | None = None) -> str:
    """An instant as "2026-12-04 09:00 Europe/Berlin (08:00 UTC)", or "2026-12-04 08:00 UTC"
    without a zone (or with UTC); "—" for none. The UTC part repeats the date only when it
    differs from the local one."""
    if value is None or value == "":
        return "—"
    moment = _instant(value).astimezone(UTC)
    zone = _zone(timezone)
    utc = f"{moment:%Y-%m-%d} {_clock(moment)} UTC"
    if zone is None:
        return utc
    local = moment.astimezone(zone)
    same_day = local.date() == moment.date()
    return (
        f"{local:%Y-%m-%d} {_clock(local)} {timezone} "
        f"({_clock(moment) + ' UTC' if same_day else utc})"
    )


def zone_of(payment: Mapping[str, Any]) -> str | None:
    """A payment view's own zone: its `timezone`, else its calendar rule's; None is UTC
    (a one-time payment usually has none)."""
    zone = payment.get("timezone")
    if zone:
        return str(zone)
    rule = payment.get("recurrence")
    if isinstance(rule, Mapping) and rule.get("timezone"):
        return str(rule["timezone"])
    return None


async def next_due(app: App, payment: Mapping[str, Any]) -> list[str]:
    """The next UPCOMING due times of an active recurring payment (ISO, as the API's preview
    gives them); none for a one-time, paused or finished one."""
    recurring = payment.get("cron") or payment.get("recurrence")
    if payment.get("state") != "active" or not recurring:
        return []
    return [str(iso(d.due)) for d in await app.upcoming(int(payment["id"]), UPCOMING)]
