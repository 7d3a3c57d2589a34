from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paysched.clock import ManualClock, from_ms, to_ms
from paysched.errors import InvalidInput
from paysched.schedules import (
    last_cron,
    next_cron,
    parse_duration,
    parse_instant,
    parse_timezone,
    validate_cron,
)


def test_durations() -> None:
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_duration("2h") == timedelta(hours=2)
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration("soon")


def test_instants_need_an_offset() -> None:
    assert parse_instant("2026-12-01T09:00:00+01:00") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert parse_instant("2026-12-01T09:00:00Z") == datetime(2026, 12, 1, 9, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="no UTC offset"):
        parse_instant("2026-12-01T09:00:00")
    with pytest.raises(InvalidInput) as info:
        parse_instant("tomorrow")
    assert info.value.field == "at"


def test_cron_keeps_local_time_across_dst() -> None:
    # 09:00 every day in Berlin: 08:00 UTC in winter, 07:00 UTC in summer.
    before = datetime(2026, 3, 28, 12, tzinfo=UTC)  # DST starts on 2026-03-29
    first = next_cron("0 9 * * *", before, "Europe/Berlin")
    second = next_cron("0 9 * * *", first, "Europe/Berlin")
    assert first == datetime(2026, 3, 29, 7, tzinfo=UTC)
    assert second == datetime(2026, 3, 30, 7, tzinfo=UTC)
    winter = next_cron("0 9 * * *", datetime(2026, 1, 5, tzinfo=UTC), "Europe/Berlin")
    assert winter == datetime(2026, 1, 5, 8, tzinfo=UTC)


def test_cron_dst_gap_runs_at_the_first_instant_after_it() -> None:
    """02:30 daily in Berlin on spring-forward day (02:00 -> 03:00): 03:00 CEST, the first valid
    instant after the gap, as recurrence rules do (until issue 12 it ran at 03:30). Fall back:
    once, at the first 02:30 (CEST)."""
    spring = next_cron("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), "Europe/Berlin")
    assert spring == datetime(2026, 3, 29, 1, tzinfo=UTC)
    autumn = next_cron("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), "Europe/Berlin")
    assert autumn == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    after = next_cron("30 2 * * *", autumn, "Europe/Berlin")
    assert after == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_cron_validation() -> None:
    assert validate_cron("*/5 * * * *") == "*/5 * * * *"
    with pytest.raises(InvalidInput, match="cron"):
        validate_cron("every day")
    with pytest.raises(InvalidInput):
        validate_cron("* * * * * *")  # seconds only for the tick
    assert validate_cron("*/2 * * * * *", allow_seconds=True)


def test_tick_fires_at_second_zero_by_default() -> None:
    after = datetime(2026, 11, 28, 10, 15, 42, 500_000, tzinfo=UTC)
    assert next_cron("* * * * *", after) == datetime(2026, 11, 28, 10, 16, tzinfo=UTC)
    assert next_cron("*/5 * * * * *", after) == datetime(2026, 11, 28, 10, 15, 45, tzinfo=UTC)


def test_timezones() -> None:
    for name in ("America/New_York", "UTC", "Etc/UTC", "Europe/Berlin"):
        assert parse_timezone(name).key == name
    # Files beside the zones that ZoneInfo would open too: the host's local time, the
    # compiler's default, a placeholder, the leap-second and POSIX copies; and no name at all.
    for bad in (
        "Mars/Olympus",
        "",
        "localtime",
        "posixrules",
        "Factory",
        "right/UTC",
        "posix/Europe/Berlin",
        "Europe/../UTC",
    ):
        with pytest.raises(InvalidInput, match="unknown time zone") as info:
            parse_timezone(bad, "tz")
        assert info.value.field == "tz"


def test_clock_helpers() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(timedelta(milliseconds=1500))
    assert to_ms(clock.now()) == to_ms(datetime(2026, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC))
    assert from_ms(to_ms(clock.now())) == clock.now()
    with pytest.raises(ValueError, match="naive"):
        ManualClock(datetime(2026, 1, 1))


def test_six_field_cron_has_seconds_first_everywhere() -> None:
    """The tick cron and a payment's cron read six fields the same way: seconds first."""
    at = datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    fires = []
    for _ in range(3):
        at = next_cron("*/4 * * * * *", at)
        fires.append(at)
    assert fires == [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in (4, 8, 12)]


def test_a_tick_cron_fires_strictly_after_in_utc() -> None:
    """What the scheduler's tick and the scheduled reconciliation rely on, now that they read
    their cron with the payments' next_cron: the next fire strictly after (a tick that ends
    on its fire time waits for the next one, never runs twice), in UTC whatever the offset
    the time was given in."""
    fire = datetime(2026, 11, 28, 10, 15, 45, tzinfo=UTC)
    assert next_cron("*/5 * * * * *", fire) == fire + timedelta(seconds=5)
    assert next_cron("*/5 * * * * *", fire - timedelta(microseconds=1)) == fire
    berlin = fire.astimezone(parse_timezone("Europe/Berlin"))
    nxt = next_cron("0 * * * *", berlin)
    assert nxt == datetime(2026, 11, 28, 11, 0, tzinfo=UTC) and nxt.utcoffset() == timedelta(0)


def test_last_cron_is_at_or_before() -> None:
    at = datetime(2026, 11, 28, 10, 15, 42, tzinfo=UTC)
    assert last_cron("0 2 * * *", at) == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert last_cron("0 11 * * *", at) == datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    assert last_cron("*/5 * * * * *", at) == datetime(2026, 11, 28, 10, 15, 40, tzinfo=UTC)
    on_time = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert last_cron("0 2 * * *", on_time) == on_time  # a fire time is its own last
