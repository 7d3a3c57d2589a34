"""The dashboard's times: in the payment's own zone beside UTC (web/times.py), and the one-line
summary a queue job carries (domain.payment_summary)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import paysched.api  # noqa: F401  (first: paysched.web and paysched.api import each other)
from paysched.domain import payment_summary
from paysched.web.times import zone_of, zoned

BERLIN = "Europe/Berlin"
NY = "America/New_York"
CASES = [
    # Winter (CET, +1) and summer (CEST, +2): the offset is the date's own.
    ("2026-12-04T08:00:00.000+00:00", BERLIN, "2026-12-04 09:00 Europe/Berlin (08:00 UTC)"),
    ("2026-07-01T07:00:00.000+00:00", BERLIN, "2026-07-01 09:00 Europe/Berlin (07:00 UTC)"),
    # Another day in UTC: the UTC part says which.
    ("2026-12-03T23:30:00+00:00", BERLIN, "2026-12-04 00:30 Europe/Berlin (2026-12-03 23:30 UTC)"),
    ("2026-03-01T03:00:00+00:00", NY, "2026-02-28 22:00 America/New_York (2026-03-01 03:00 UTC)"),
    # Seconds where there are some (an attempt's start), not on a schedule's 09:00.
    ("2026-12-04T08:00:07.250+00:00", BERLIN, "2026-12-04 09:00:07 Europe/Berlin (08:00:07 UTC)"),
    # No zone (a one-time payment), or UTC itself: UTC once.
    ("2026-12-04T08:00:00+00:00", None, "2026-12-04 08:00 UTC"),
    ("2026-12-04T08:00:00+00:00", "UTC", "2026-12-04 08:00 UTC"),
    ("2026-12-04T09:00:00+01:00", None, "2026-12-04 08:00 UTC"),
    ("2026-12-04T08:00:00", None, "2026-12-04 08:00 UTC"),  # naive is UTC, never local
    (
        datetime(2026, 12, 4, 8, tzinfo=UTC),
        "Asia/Kolkata",
        "2026-12-04 13:30 Asia/Kolkata (08:00 UTC)",
    ),
    (None, BERLIN, "—"),
]


@pytest.mark.parametrize(("value", "zone", "shown"), CASES)
def test_zoned(value: str | datetime | None, zone: str | None, shown: str) -> None:
    assert zoned(value, zone) == shown


def test_a_zone_that_is_gone_falls_back_to_utc() -> None:
    assert zoned("2026-12-04T08:00:00+00:00", "Mars/Olympus") == "2026-12-04 08:00 UTC"


def test_zone_of_a_payment() -> None:
    assert zone_of({"timezone": "Europe/Berlin", "recurrence": None}) == "Europe/Berlin"
    rule = {"rrule": "FREQ=WEEKLY", "timezone": "Asia/Tokyo"}
    assert zone_of({"timezone": None, "recurrence": rule}) == "Asia/Tokyo"
    assert zone_of({"timezone": None, "recurrence": None}) is None


def test_payment_summary() -> None:
    assert payment_summary(12, 1234, "EUR", "alice", "bob") == "payment #12: 12.34 EUR alice → bob"
    assert payment_summary(3, 500, "JPY", "a", "b") == "payment #3: 500 JPY a → b"
    assert payment_summary(4, 1, "KWD", "a", "b") == "payment #4: 0.001 KWD a → b"
