"""The recurrence engine: validation, hand-written calendar tables, and one regression test per
DST bug of another scheduler that issue 12 names, each with the exact instants paysched gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
from dateutil import rrule as du

from paysched.errors import InvalidInput
from paysched.recurrence import (
    DATE_BUDGET,
    REQUEST_BUDGET,
    Due,
    Recurrence,
    describe,
    next_due,
    parse_recurrence,
    preview,
)
from paysched.schedules import next_cron


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def nominals(rec: Recurrence, after: datetime | None, count: int) -> list[datetime]:
    return [d.nominal for d in preview(rec, after, count)]


@contextmanager
def walked() -> Iterator[list[int]]:
    """The months of calendar dateutil walks inside the block (a YEARLY period counts 12),
    counted where dateutil rebuilds its masks for each month or year it walks: the work of an
    expansion, measured apart from paysched's own meter."""
    info = du._iterinfo
    real = info.rebuild
    months = [0]

    def rebuild(self: Any, year: int, month: int) -> None:
        months[0] += 12 if self.rrule._freq == du.YEARLY else 1
        real(self, year, month)

    info.rebuild = rebuild
    try:
        yield months
    finally:
        info.rebuild = real


def cron_chain(expr: str, after: datetime, tz: str, count: int) -> list[datetime]:
    fires = []
    for _ in range(count):
        after = next_cron(expr, after, tz)
        fires.append(after)
    return fires


# --- regressions: each named bug, and what paysched does instead ---------------------------


def test_apscheduler_606_no_day_skipped_across_dst() -> None:
    """Daily at midnight US/Pacific: APScheduler went from Mar 13 to Mar 15, 2022."""
    rec = parse_recurrence("FREQ=DAILY", "2022-03-12T00:00", "America/Los_Angeles")
    expected = [utc(2022, 3, 12, 8), utc(2022, 3, 13, 8), utc(2022, 3, 14, 7), utc(2022, 3, 15, 7)]
    assert nominals(rec, None, 4) == expected
    assert next_due(rec, utc(2022, 3, 13, 8)) == Due(utc(2022, 3, 14, 7), utc(2022, 3, 14, 7))
    assert cron_chain("0 0 * * *", utc(2022, 3, 12, 7), "America/Los_Angeles", 4) == expected


def test_apscheduler_529_weekday_midnight_not_a_day_late_across_dst() -> None:
    """Weekdays at 00:00 US/Central, asked on Fri 2021-03-12 just after midnight: APScheduler
    answered Tue Mar 16 (it added 24 h to a 23-hour day); the next is Mon Mar 15 00:00 CDT."""
    rec = parse_recurrence(
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "2021-03-01T00:00", "America/Chicago"
    )
    after = datetime(2021, 3, 12, 6, 0, 0, 1, tzinfo=UTC)  # 00:00:00.000001 CST
    assert nominals(rec, after, 2) == [utc(2021, 3, 15, 5), utc(2021, 3, 16, 5)]
    assert next_cron("0 0 * * 1-5", after, "America/Chicago") == utc(2021, 3, 15, 5)


def test_apscheduler_980_no_loop_at_fall_back() -> None:
    """Every odd hour in Europe/London on 2024-10-27: APScheduler returned 01:00 again and
    again. The wall time 01:00 runs once (its first instance) and the chain moves on."""
    fires = cron_chain("0 1-23/2 * * *", utc(2024, 10, 26, 23, 30), "Europe/London", 3)
    assert fires == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 3), utc(2024, 10, 27, 5)]
    rec = parse_recurrence("FREQ=DAILY", "2024-10-25T01:00", "Europe/London")
    # Asked at the first 01:00 (just run) and inside the repeated hour: the next day, once.
    for after in (utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 1, 30)):
        assert next_due(rec, after) == Due(utc(2024, 10, 28, 1), utc(2024, 10, 28, 1))


def test_apscheduler_1021_no_loop_when_now_is_in_the_repeated_hour() -> None:
    """Daily 01:00:10 America/New_York with `now` 10 µs after the first 01:00:10 on 2025-11-02:
    APScheduler kept returning the fold=1 01:00:10. paysched: the next day, once."""
    rec = parse_recurrence("FREQ=DAILY", "2025-11-01T01:00:10", "America/New_York")
    assert nominals(rec, None, 2) == [utc(2025, 11, 1, 5, 0, 10), utc(2025, 11, 2, 5, 0, 10)]
    for after in (datetime(2025, 11, 2, 5, 0, 10, 10, tzinfo=UTC), utc(2025, 11, 2, 6, 0, 10)):
        assert nominals(rec, after, 2) == [utc(2025, 11, 3, 6, 0, 10), utc(2025, 11, 4, 6, 0, 10)]
    after = datetime(2025, 11, 2, 5, 0, 10, 10, tzinfo=UTC)
    assert next_cron("10 0 1 * * *", after, "America/New_York") == utc(2025, 11, 3, 6, 0, 10)


def test_celery_1604_no_second_run_at_dst_change() -> None:
    """Mondays at 12:00 after the 2013 fall-back: Celery beat ran at 11:00 and again at 12:00.
    paysched runs once, at 12:00 CET."""
    rec = parse_recurrence("FREQ=WEEKLY;BYDAY=MO", "2013-10-14T12:00", "Europe/Amsterdam")
    expected = [
        utc(2013, 10, 14, 10),
        utc(2013, 10, 21, 10),
        utc(2013, 10, 28, 11),
        utc(2013, 11, 4, 11),
    ]
    assert nominals(rec, None, 4) == expected
    assert cron_chain("0 12 * * 1", utc(2013, 10, 14, 9), "Europe/Amsterdam", 4) == expected


def test_celery_10107_fall_back_hour_runs_once_not_skipped() -> None:
    """An hourly crontab skipped the repeated 01:00 in US/Pacific on 2026-11-01. In paysched a
    wall time is an occurrence: 01:00 runs once, at its first instance (08:00 UTC), and no wall
    hour is skipped (00, 01, 02, 03 each once). A daily 01:00 payment runs that day, once."""
    fires = cron_chain("0 * * * *", utc(2026, 11, 1, 6, 30), "America/Los_Angeles", 4)
    assert fires == [
        utc(2026, 11, 1, 7),
        utc(2026, 11, 1, 8),
        utc(2026, 11, 1, 10),
        utc(2026, 11, 1, 11),
    ]
    rec = parse_recurrence("FREQ=DAILY", "2026-10-31T01:00", "America/Los_Angeles")
    assert nominals(rec, None, 3) == [
        utc(2026, 10, 31, 8),
        utc(2026, 11, 1, 8),
        utc(2026, 11, 2, 9),
    ]


def test_croniter_48_no_extra_run_after_fall_back() -> None:
    """Mondays 08:00 Europe/Amsterdam: croniter added a 07:00 run on the Monday after the
    fall-back (2017-10-30). paysched: 08:00 CET only."""
    rec = parse_recurrence("FREQ=WEEKLY;BYDAY=MO", "2017-10-16T08:00", "Europe/Amsterdam")
    expected = [
        utc(2017, 10, 16, 6),
        utc(2017, 10, 23, 6),
        utc(2017, 10, 30, 7),
        utc(2017, 11, 6, 7),
    ]
    assert nominals(rec, None, 4) == expected
    assert cron_chain("0 8 * * 1", utc(2017, 10, 16, 5), "Europe/Amsterdam", 4) == expected


def test_temporal_0230_not_skipped_on_spring_forward() -> None:
    """Temporal skips a 02:30 action on spring-forward day; paysched runs it at 03:00 EDT,
    the first valid instant after the gap (and so does a cron)."""
    rec = parse_recurrence("FREQ=DAILY", "2026-03-07T02:30", "America/New_York")
    expected = [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]
    assert nominals(rec, None, 3) == expected
    assert cron_chain("30 2 * * *", utc(2026, 3, 7, 7), "America/New_York", 3) == expected


def test_temporal_0130_once_on_fall_back() -> None:
    """Temporal runs a 01:30 action twice on fall-back day; paysched once, at 01:30 EDT."""
    rec = parse_recurrence("FREQ=DAILY", "2026-10-31T01:30", "America/New_York")
    expected = [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert nominals(rec, None, 3) == expected
    assert next_due(rec, utc(2026, 11, 1, 5, 30)) == Due(expected[2], expected[2])
    assert cron_chain("30 1 * * *", utc(2026, 10, 31, 5), "America/New_York", 3) == expected


def test_temporal_has_no_end_of_month_rule() -> None:
    """Monthly on the 31st keeps its anchor through short months (Temporal has no such rule)."""
    rec = parse_recurrence("FREQ=MONTHLY", "2026-01-31T09:00", "Europe/Berlin")
    days = [d.nominal.date() for d in preview(rec, None, 4)]
    assert days == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]


def test_cron_and_rrule_agree_in_a_half_hour_gap() -> None:
    """Lord Howe moves 30 minutes at 02:00 on 2026-10-04: 02:15 runs at 02:30 (+11)."""
    rec = parse_recurrence("FREQ=DAILY", "2026-10-03T02:15", "Australia/Lord_Howe")
    expected = [utc(2026, 10, 2, 15, 45), utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)]
    assert nominals(rec, None, 3) == expected
    assert cron_chain("15 2 * * *", utc(2026, 10, 2, 15), "Australia/Lord_Howe", 3) == expected


# --- hand-written calendar tables ------------------------------------------------------------

# The day of each month from January 2027 to December 2028 (2028 is a leap year).
MONTH_ENDS = {
    29: [
        29,
        28,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
        29,
    ],
    30: [
        30,
        28,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        29,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
        30,
    ],
    31: [
        31,
        28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
        31,
        29,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ],
}


@pytest.mark.parametrize("anchor", [29, 30, 31])
@pytest.mark.parametrize("written", ["implied", "bymonthday"])
def test_month_end_clamping_2027_2028(anchor: int, written: str) -> None:
    if written == "implied":
        rec = parse_recurrence("FREQ=MONTHLY", f"2027-01-{anchor}T09:00", "Europe/Berlin")
    else:
        rec = parse_recurrence(f"FREQ=MONTHLY;BYMONTHDAY={anchor}", "2027-01-01T09:00", "UTC")
    dues = preview(rec, None, 24)
    assert [d.nominal.day for d in dues] == MONTH_ENDS[anchor]
    assert [(d.nominal.year, d.nominal.month) for d in dues] == [
        (2027 + i // 12, i % 12 + 1) for i in range(24)
    ]


def test_yearly_feb_29_falls_on_feb_28_in_common_years() -> None:
    rec = parse_recurrence("FREQ=YEARLY", "2024-02-29T12:00", "UTC")
    assert [d.nominal.date() for d in preview(rec, None, 5)] == [
        date(2024, 2, 29),
        date(2025, 2, 28),
        date(2026, 2, 28),
        date(2027, 2, 28),
        date(2028, 2, 29),
    ]


def test_last_business_day_of_each_month_2026_germany() -> None:
    rec = parse_recurrence(
        "FREQ=MONTHLY;BYMONTHDAY=-1", "2026-01-01T09:00", "Europe/Berlin", "preceding", "DE"
    )
    # By hand: weekends, Pentecost Monday (May 25) is not the 31st; Oct 31 is a Saturday.
    expected = [
        date(2026, 1, 30),
        date(2026, 2, 27),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 29),
        date(2026, 6, 30),
        date(2026, 7, 31),
        date(2026, 8, 31),
        date(2026, 9, 30),
        date(2026, 10, 30),
        date(2026, 11, 30),
        date(2026, 12, 31),
    ]
    dues = preview(rec, None, 12)
    assert [d.due.date() for d in dues] == expected
    # The key is the nominal last day, whatever the adjustment.
    assert [d.nominal.day for d in dues] == [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    assert all(d.due.hour == d.nominal.hour for d in dues)  # 09:00 local kept


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # Christmas at the NYSE (closed Dec 25, or the observed Friday/Monday).
        (
            "FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=25",
            [
                date(2021, 12, 27),
                date(2022, 12, 27),
                date(2023, 12, 26),
                date(2024, 12, 26),
                date(2025, 12, 26),
                date(2026, 12, 28),
            ],
        ),
        # New Year: 2022-01-01 was a Saturday the NYSE did not observe on Friday Dec 31.
        (
            "FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=1",
            [
                date(2022, 1, 3),
                date(2023, 1, 3),
                date(2024, 1, 2),
                date(2025, 1, 2),
                date(2026, 1, 2),
                date(2027, 1, 4),
            ],
        ),
    ],
)
def test_following_business_day_around_new_year_nyse(rule: str, expected: list[date]) -> None:
    rec = parse_recurrence(rule, "2021-01-01T10:00", "America/New_York", "following", "NYSE")
    dues = preview(rec, utc(2021, 12, 1), 6)
    assert [d.due.date() for d in dues] == expected
    assert all(d.due.hour == d.nominal.hour for d in dues)  # 10:00 New York, EST all along


def test_modified_following_stays_in_the_month() -> None:
    rec = parse_recurrence(
        "FREQ=MONTHLY;BYMONTHDAY=31",
        "2026-01-01T09:00",
        "Europe/Berlin",
        "modified_following",
        "DE",
    )
    dues = {d.nominal.date(): d.due.date() for d in preview(rec, None, 12)}
    assert dues[date(2026, 1, 31)] == date(2026, 1, 30)  # Sat; Mon Feb 2 is next month
    assert dues[date(2026, 5, 31)] == date(2026, 5, 29)  # Sun; Mon Jun 1 is next month
    assert dues[date(2026, 10, 31)] == date(2026, 10, 30)  # Sat
    assert dues[date(2026, 8, 31)] == date(2026, 8, 31)  # a Monday: unchanged
    following = parse_recurrence(
        "FREQ=MONTHLY;BYMONTHDAY=31", "2026-01-01T09:00", "Europe/Berlin", "following", "DE"
    )
    assert preview(following, None, 1)[0].due.date() == date(2026, 2, 2)
    # The 3rd of October 2026 (German Unity Day) is a Saturday anyway; the 2nd of April 2026
    # is Maundy Thursday, a business day; Good Friday (Apr 3) moves to Tuesday Apr 7.
    friday = parse_recurrence(
        "FREQ=MONTHLY;BYMONTHDAY=3", "2026-04-01T09:00", "Europe/Berlin", "modified_following", "DE"
    )
    assert preview(friday, None, 1)[0].due.date() == date(2026, 4, 7)


def test_moving_off_a_holiday_never_makes_a_second_occurrence() -> None:
    """Daily with `following` over Christmas 2026 in DE: Dec 25 (Fri), 26, 27 all run on Mon
    Dec 28, as three occurrences with their own nominal keys; chaining by nominal visits each
    nominal date once."""
    rec = parse_recurrence("FREQ=DAILY", "2026-12-24T09:00", "Europe/Berlin", "following", "DE")
    dues = preview(rec, None, 6)
    assert [d.nominal.day for d in dues] == [24, 25, 26, 27, 28, 29]
    assert [d.due.day for d in dues] == [24, 28, 28, 28, 28, 29]
    chained, after = [], None
    for _ in range(6):
        found = next_due(rec, after)
        assert found is not None
        chained.append(found)
        after = found.nominal
    assert chained == dues


# --- validation, storage, text -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"rule": "FREQ=HOURLY"}, "rrule", "unsupported FREQ"),
        ({"rule": "FREQ=DAILY;BYHOUR=3"}, "rrule", "unsupported RRULE part BYHOUR"),
        ({"rule": "BYDAY=MO"}, "rrule", "FREQ is required"),
        ({"rule": "FREQ=DAILY;COUNT=2;UNTIL=20270101"}, "rrule", "COUNT and UNTIL"),
        ({"rule": "FREQ=MONTHLY;BYMONTHDAY=30;BYMONTH=2"}, "rrule", "never falls in February"),
        ({"rule": "FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=4,6"}, "rrule", "never falls"),
        ({"rule": "FREQ=MONTHLY;BYMONTHDAY=0"}, "rrule", "±1..31"),
        ({"rule": "FREQ=WEEKLY;BYDAY=2MO"}, "rrule", "ordinal"),
        ({"rule": "FREQ=WEEKLY;BYMONTHDAY=3"}, "rrule", "WEEKLY"),
        ({"rule": "FREQ=MONTHLY;BYSETPOS=1"}, "rrule", "another BY part"),
        ({"rule": "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6"}, "rrule", "produces no date"),
        ({"rule": "FREQ=MONTHLY;BYMONTHDAY=31;BYSETPOS=1"}, "rrule", "clamps"),
        ({"rule": "FREQ=DAILY;UNTIL=20200101"}, "rrule", "before the first occurrence"),
        ({"rule": "FREQ=DAILY;UNTIL=tomorrow"}, "rrule", "UNTIL must look like"),
        ({"rule": "FREQ=DAILY;FREQ=DAILY"}, "rrule", "twice"),
        ({"rule": "FREQ=DAILY;COUNT=0"}, "rrule", "COUNT"),
        ({"rule": "FREQ=DAILY;INTERVAL=0"}, "rrule", "INTERVAL"),
        # Found by the rules drawn from RFC 5545's parts: two numbers were a ValueError.
        ({"rule": "FREQ=DAILY;INTERVAL=2,3"}, "rrule", "INTERVAL takes one number"),
        ({"rule": "FREQ=DAILY;COUNT=2,3"}, "rrule", "COUNT takes one number"),
        ({"start": "2026-01-31"}, "start", "time of day"),
        ({"start": "soon"}, "start", "2026-01-31T09:00"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"business_day": "nearest"}, "business_day", "modified_following"),
        ({"calendar": "XX"}, "calendar", "unknown holiday calendar"),
        ({"calendar": "DE-ZZ"}, "calendar", "no subdivision"),
    ],
)
def test_refusals_name_the_field(kwargs: dict[str, str], field: str, message: str) -> None:
    args: dict[str, Any] = {
        "rule": "FREQ=DAILY",
        "start": "2026-01-31T09:00",
        "timezone": "Europe/Berlin",
        "business_day": "following",
        "calendar": "DE",
        **kwargs,
    }
    with pytest.raises(InvalidInput, match=message) as info:
        parse_recurrence(**args)
    assert info.value.field == field


def test_rule_field_name_is_the_callers() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_recurrence("FREQ=SECONDLY", "2026-01-31T09:00", "UTC", field="repeat")
    assert info.value.field == "repeat"


def test_canonical_form_and_json_round_trip() -> None:
    rec = parse_recurrence(
        " rrule:freq=monthly;byday=-1fr,2mo;interval=2 ",
        "2026-01-31 09:00",
        "Europe/Berlin",
        "modified_following",
        "de-by",
    )
    assert rec.rule == "FREQ=MONTHLY;INTERVAL=2;BYDAY=-1FR,2MO"
    assert rec.calendar == "DE-BY"
    text = rec.to_json()
    assert text == (
        '{"business_day":"modified_following","calendar":"DE-BY",'
        '"rule":"FREQ=MONTHLY;INTERVAL=2;BYDAY=-1FR,2MO",'
        '"start":"2026-01-31T09:00:00","timezone":"Europe/Berlin","v":1}'
    )
    assert Recurrence.from_json(text) == rec
    with pytest.raises(InvalidInput):
        Recurrence.from_json('{"v": 2}')
    market = parse_recurrence("FREQ=DAILY", "2026-01-01T09:00", "UTC", "following", "xecb")
    assert market.calendar == "XECB"


def test_an_aware_start_is_taken_as_its_wall_time_in_the_zone() -> None:
    rec = parse_recurrence("FREQ=DAILY", "2026-01-31T08:00:00Z", "Europe/Berlin")
    assert rec.start == datetime(2026, 1, 31, 9)
    same = parse_recurrence("FREQ=DAILY", datetime(2026, 1, 31, 8, tzinfo=UTC), "Europe/Berlin")
    assert same == rec


def test_count_and_until_end_the_series() -> None:
    rec = parse_recurrence(
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=FR;COUNT=12", "2026-01-02T09:00", "America/New_York"
    )
    dues = preview(rec, None, 20)
    assert len(dues) == 12 and dues[-1].nominal == utc(2026, 6, 5, 13)
    assert next_due(rec, dues[-1].nominal) is None
    assert next_due(rec, dues[5].nominal) == dues[6]
    until = parse_recurrence("FREQ=DAILY;UNTIL=20260103", "2026-01-01T09:00", "Europe/Berlin")
    assert [d.nominal.day for d in preview(until, None, 9)] == [1, 2, 3]
    instant = parse_recurrence(
        "FREQ=DAILY;UNTIL=20260103T080000Z", "2026-01-01T09:00", "Europe/Berlin"
    )
    assert [d.nominal.day for d in preview(instant, None, 9)] == [1, 2, 3]
    early = parse_recurrence(
        "FREQ=DAILY;UNTIL=20260103T075959Z", "2026-01-01T09:00", "Europe/Berlin"
    )
    assert [d.nominal.day for d in preview(early, None, 9)] == [1, 2]


def test_next_due_is_fast_far_into_a_long_series() -> None:
    """A daily rule asked 60 years on expands from the period of `after`, not from the start:
    thousands of calls stay well under a second."""
    rec = parse_recurrence("FREQ=DAILY;INTERVAL=3", "1990-01-01T09:00", "Europe/Berlin")
    after = utc(2050, 6, 1)
    for _ in range(2000):
        found = next_due(rec, after)
        assert found is not None
        after = found.nominal
    assert after.year == 2066


# --- the work budget (issue 19, finding 8) ---------------------------------------------------

# Every day of every month, then positions 29..31 from either end: no month has them, so
# dateutil walked on to the year 9999 (2-3 s per POST).
NEVER = (
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYMONTHDAY="
    + ",".join(map(str, range(1, 29)))
    + ";BYSETPOS=29,30,31,-29,-30,-31"
)
# Valid and sparse: a Monday Feb 29, every 28 to 40 years (a preview of 1000 took 12.5 s).
SPARSE = "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO"


def test_a_rule_without_dates_is_refused_within_the_date_budget() -> None:
    with walked() as months, pytest.raises(InvalidInput, match="search budget") as info:
        parse_recurrence(NEVER, "2026-01-01T09:00", "UTC")
    assert info.value.field == "rrule"
    assert months[0] <= DATE_BUDGET + 1


def test_a_preview_is_refused_past_the_request_budget_naming_count() -> None:
    rec = parse_recurrence(SPARSE, "2026-01-01T09:00", "UTC")
    assert [d.nominal.year for d in preview(rec, None, 3)] == [2044, 2072, 2112]
    with walked() as months, pytest.raises(InvalidInput, match="search budget") as info:
        preview(rec, None, 1000)
    assert info.value.field == "count" and "ask for fewer" in info.value.problem
    assert months[0] <= REQUEST_BUDGET + 1


def test_a_date_more_than_a_century_of_search_ahead_ends_the_series() -> None:
    """What the scheduler steps with: every 11th day that is a Monday Feb 29 falls in 2044,
    then in 2196. Past 2044 the series has ended, found within one date's budget."""
    rec = parse_recurrence(SPARSE + ";INTERVAL=11", "2026-01-01T09:00", "UTC")
    first = next_due(rec, None)
    assert first is not None and first.nominal == utc(2044, 2, 29, 9)
    with walked() as months:
        assert next_due(rec, first.nominal) is None
    assert months[0] <= DATE_BUDGET + 1


def test_a_count_series_longer_than_the_request_budget_is_refused() -> None:
    """A COUNT series is expanded whole: 10000 yearly dates would walk to the year 9999."""
    with walked() as months, pytest.raises(InvalidInput, match="smaller COUNT") as info:
        parse_recurrence("FREQ=YEARLY;COUNT=10000", "2026-01-01T09:00", "UTC")
    assert info.value.field == "rrule"
    assert months[0] <= DATE_BUDGET + REQUEST_BUDGET + 24
    assert (
        len(
            preview(
                parse_recurrence("FREQ=YEARLY;COUNT=400", "2026-01-01T09:00", "UTC"), None, 1000
            )
        )
        == 400
    )


def test_a_stored_rule_is_read_without_walking_its_calendar() -> None:
    """Every view of a payment reads its stored rule (on the event loop): searched for its
    first date when it was made, it is not searched again."""
    text = parse_recurrence(SPARSE, "2026-01-01T09:00", "UTC").to_json()
    with walked() as months:
        rec = Recurrence.from_json(text)
        describe(rec)
    assert months[0] == 0 and rec.rule == SPARSE


def test_describe() -> None:
    rec = parse_recurrence(
        "FREQ=MONTHLY;BYMONTHDAY=-1", "2026-01-31T09:00", "Europe/Berlin", "following", "DE"
    )
    assert describe(rec) == (
        "monthly on the last day at 09:00 Europe/Berlin, from 2026-01-31, "
        "following business day (DE)"
    )
    rec = parse_recurrence(
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=FR;COUNT=12",
        "2026-01-02T09:00",
        "America/New_York",
        "preceding",
    )
    assert describe(rec) == (
        "every 2 weeks on Friday at 09:00 America/New_York, from 2026-01-02, 12 times, "
        "preceding business day (weekends only)"
    )
    rec = parse_recurrence(
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;UNTIL=20261231", "2026-01-01T17:30", "UTC"
    )
    assert describe(rec) == (
        "monthly on the last of Monday, Tuesday, Wednesday, Thursday and "
        "Friday at 17:30 UTC, from 2026-01-01 until 2026-12-31"
    )
    rec = parse_recurrence("FREQ=MONTHLY", "2026-01-31T09:00", "UTC")
    assert describe(rec) == "monthly on day 31 (or the month's last) at 09:00 UTC, from 2026-01-31"
