"""Property-based tests of the recurrence engine against independent oracles.

- Wall time -> instant: a brute-force scan of UTC minutes with dateutil's tz (its own TZif
  reader, not zoneinfo) finds every instant whose local wall time is the target; the first one,
  or when there is none (a gap) the first instant whose wall time is past it.
- The series: month ends computed with calendar.monthrange, everything else expanded by
  dateutil's rrulestr from DTSTART in full (no skipping ahead, COUNT counted by dateutil),
  then resolved with the oracle above.
- The work: rules drawn from RFC 5545's parts, as a hostile client writes them, are answered
  or refused within the budget, counted as months dateutil walks (not seconds).
Zones include 30-minute DST (Lord_Howe), a 45-minute offset (Chatham), southern-hemisphere
rules (Sydney, Santiago, Sao Paulo's historic DST, Auckland) and none (Kolkata); instants are
drawn near real transitions of 1990-2037.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import holidays
from dateutil import rrule as du
from dateutil import tz as dtz
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from paysched.errors import InvalidInput
from paysched.recurrence import (
    DATE_BUDGET,
    REQUEST_BUDGET,
    Due,
    Recurrence,
    adjust_business_day,
    is_business_day,
    next_due,
    parse_recurrence,
    preview,
    resolve_local,
)
from paysched.schedules import next_cron
from tests.unit.test_recurrence import NEVER, SPARSE, walked

EXAMPLES = 150
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "America/Santiago",
    "Europe/London",
    "Pacific/Auckland",
]
FIRST, LAST = datetime(1990, 1, 1, tzinfo=UTC), datetime(2037, 1, 1, tzinfo=UTC)


@cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """The zone's UTC offset changes in 1990-2037, read from dateutil's parsed TZif data."""
    found = []
    tzinfo = dtz.gettz(zone)
    for stamp in getattr(tzinfo, "_trans_list_utc", ()):
        moment = datetime.fromtimestamp(stamp, UTC)
        if FIRST <= moment < LAST:
            found.append(moment)
    return tuple(found)


def oracle_wall(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(dtz.gettz(zone)).replace(tzinfo=None)


def oracle_resolve(wall: datetime, zone: str) -> datetime:
    """Scan whole UTC minutes around `wall` (these zones move on whole minutes since 1990)."""
    guess = wall.replace(tzinfo=UTC)
    offsets = [
        oracle_wall(guess + timedelta(hours=h), zone)
        - (guess + timedelta(hours=h)).replace(tzinfo=None)
        for h in (-30, 0, 30)
    ]
    low = guess - max(offsets) - timedelta(hours=2)
    high = guess - min(offsets) + timedelta(hours=2)
    moment = low.replace(second=0, microsecond=0)
    later = None
    while moment <= high:
        seen = oracle_wall(moment, zone)
        if seen == wall:
            return moment  # the first instance
        if seen > wall and later is None:
            later = moment
        moment += timedelta(minutes=1)
    assert later is not None, (wall, zone)
    return later


@st.composite
def near_transition(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and a naive wall time, mostly within hours of one of its real transitions."""
    zone = draw(st.sampled_from(ZONES))
    moments = transitions(zone)
    if moments and draw(st.integers(0, 9)) > 0:
        moment = draw(st.sampled_from(moments))
        wall = oracle_wall(moment - timedelta(seconds=1), zone) + timedelta(seconds=1)
        wall += timedelta(minutes=draw(st.integers(-90, 90)))
    else:
        wall = draw(st.datetimes(datetime(1990, 1, 2), datetime(2036, 12, 30)))
        wall = wall.replace(second=0, microsecond=0)
    return zone, wall


@PROPERTY
@given(case=near_transition())
def test_resolve_local_matches_a_brute_force_scan(case: tuple[str, datetime]) -> None:
    zone, wall = case
    assert resolve_local(wall, ZoneInfo(zone)) == oracle_resolve(wall, zone)


@PROPERTY
@given(case=near_transition())
def test_cron_agrees_with_resolve_local(case: tuple[str, datetime]) -> None:
    """A daily cron at the drawn wall time fires, on the drawn day, where the oracle says."""
    zone, wall = case
    expr = f"{wall.minute} {wall.hour} * * *"
    after = oracle_resolve(wall - timedelta(days=1), zone)  # the day before's run
    assert next_cron(expr, after, zone) == oracle_resolve(wall, zone)


# --- the series ------------------------------------------------------------------------------

TIMES = st.tuples(st.sampled_from([0, 1, 2, 3, 12, 23]), st.sampled_from([0, 15, 30, 45]))
DAYNAMES = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def rules(draw: st.DrawFn) -> tuple[str, datetime, str]:
    """A rule of the supported subset, a start and a zone."""
    zone, wall = draw(near_transition())
    hour, minute = draw(TIMES)
    day = draw(st.dates(date(1990, 1, 1), date(2030, 12, 31)))
    if draw(st.booleans()):  # start in the days before a transition
        day = wall.date() - timedelta(days=draw(st.integers(0, 40)))
        hour, minute = wall.hour, wall.minute
    if draw(st.integers(0, 3)) == 0:  # month-end anchors
        day = day.replace(day=calendar.monthrange(day.year, day.month)[1])
    start = datetime(day.year, day.month, day.day, hour, minute)
    freq = draw(st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]))
    parts = [f"FREQ={freq}"]
    interval = draw(st.integers(1, 3))
    if interval > 1:
        parts.append(f"INTERVAL={interval}")
    if freq == "WEEKLY" and draw(st.booleans()):
        days = draw(st.lists(st.sampled_from(DAYNAMES), min_size=1, max_size=3, unique=True))
        parts.append("BYDAY=" + ",".join(days))
    if freq == "DAILY" and draw(st.booleans()):
        parts.append("BYDAY=MO,TU,WE,TH,FR")
    if freq == "MONTHLY":
        kind = draw(st.sampled_from(["implied", "day", "nth", "setpos"]))
        if kind == "day":
            parts.append(f"BYMONTHDAY={draw(st.sampled_from([1, 15, 28, 29, 30, 31, -1, -2]))}")
        elif kind == "nth":
            nth = draw(st.sampled_from([1, 2, -1]))
            parts.append(f"BYDAY={nth}{draw(st.sampled_from(DAYNAMES))}")
        elif kind == "setpos":
            parts.append(f"BYDAY=MO,TU,WE,TH,FR;BYSETPOS={draw(st.sampled_from([1, -1]))}")
    if draw(st.booleans()):
        parts.append(f"COUNT={draw(st.integers(1, 40))}")
    return ";".join(parts), start, zone


def clamped_anchor(rule: str, start: datetime) -> int | None:
    """The day a MONTHLY/YEARLY rule clamps to the month's end, if it has one."""
    fields = dict(part.split("=") for part in rule.split(";"))
    if "BYDAY" in fields or fields["FREQ"] not in ("MONTHLY", "YEARLY"):
        return None
    anchor = int(fields.get("BYMONTHDAY", start.day))
    return anchor if anchor >= 29 else None


def oracle_walls(rule: str, start: datetime) -> list[datetime]:
    """The series' wall times from the start, in full (up to 600 of them)."""
    fields = dict(part.split("=") for part in rule.split(";"))
    count = int(fields.get("COUNT", 600))
    anchor = clamped_anchor(rule, start)
    if anchor is None:
        series = du.rrulestr(f"RRULE:{rule}", dtstart=start, cache=False)
        return list(islice(series, min(count, 600)))
    step = int(fields.get("INTERVAL", 1)) * (12 if fields["FREQ"] == "YEARLY" else 1)
    walls: list[datetime] = []
    index = start.year * 12 + start.month - 1
    while len(walls) < min(count, 600):
        year, month = divmod(index, 12)
        day = min(anchor, calendar.monthrange(year, month + 1)[1])
        walls.append(start.replace(year=year, month=month + 1, day=day))
        index += step
    return walls


def oracle_dues(rec: Recurrence, rule: str, after: datetime | None, k: int) -> list[datetime]:
    """The first `k` nominals after `after`, before 2037 (dateutil's tz stops at its last
    listed transition: later years would compare two different rule sets)."""
    floor = None if after is None else oracle_wall(after, rec.timezone) - timedelta(days=2)
    found: list[datetime] = []
    for wall in oracle_walls(rule, rec.start):
        if floor is not None and wall < floor:
            continue  # no offset is a day long: resolves long before `after`
        nominal = oracle_resolve(wall, rec.timezone)
        if nominal >= LAST or len(found) == k:
            break
        if after is None or nominal > after:
            found.append(nominal)
    return found


@st.composite
def series_cases(draw: st.DrawFn) -> tuple[Recurrence, str, datetime | None]:
    rule, start, zone = draw(rules())
    rec = parse_recurrence(rule, start, zone)
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return rec, rule, None
    walls = oracle_walls(rule, rec.start)[:300]
    wall = draw(st.sampled_from(walls))
    # Right at, just before and just after an occurrence, or an hour or so off it.
    nudge = draw(st.sampled_from([0, -1, 1, -3600, 3600, 1800, -86400]))
    base = oracle_resolve(wall, zone)
    return rec, rule, base + timedelta(seconds=nudge) + timedelta(microseconds=choice == 3)


@PROPERTY
@given(case=series_cases())
def test_series_matches_full_expansion(case: tuple[Recurrence, str, datetime | None]) -> None:
    """next_due and preview, which skip ahead to `after`'s period, give exactly the
    occurrences of a full expansion from the start (month ends, COUNT and DST included)."""
    rec, rule, after = case
    expected = oracle_dues(rec, rule, after, 8)
    got = [d for d in preview(rec, after, 8) if d.nominal < LAST]
    assert [d.nominal for d in got] == expected
    assert all(d.due == d.nominal for d in got)  # business_day none
    if expected:
        assert next_due(rec, after) == got[0]


@PROPERTY
@given(case=series_cases())
def test_chained_next_due_equals_preview_and_increases(
    case: tuple[Recurrence, str, datetime | None],
) -> None:
    rec, _, after = case
    chained: list[Due] = []
    for _ in range(6):
        found = next_due(rec, after)
        if found is None:
            break
        assert after is None or found.nominal > after
        chained.append(found)
        after = found.nominal
    assert chained == preview(rec, case[2], 6)
    assert all(a.nominal < b.nominal for a, b in pairwise(chained))


@PROPERTY
@given(case=series_cases())
def test_nominal_is_the_rules_time_of_day(case: tuple[Recurrence, str, datetime | None]) -> None:
    """Each nominal is the start's time of day on its date, or, when the zone skips that wall
    time, the first instant after the gap; and month-end anchors give min(anchor, last day)."""
    rec, rule, after = case
    anchor = clamped_anchor(rule, rec.start)
    for due in preview(rec, after, 5):
        if due.nominal >= LAST:
            break  # past the oracle's transitions (see oracle_dues)
        local = oracle_wall(due.nominal, rec.timezone)
        candidates = [
            datetime.combine(local.date() - timedelta(days=back), rec.start.time())
            for back in (0, 1)
        ]
        walls = [w for w in candidates if oracle_resolve(w, rec.timezone) == due.nominal]
        assert walls, (due, local)
        if anchor is not None:
            wall = walls[0]
            assert wall.day == min(anchor, calendar.monthrange(wall.year, wall.month)[1])


@PROPERTY
@given(case=series_cases())
def test_count_is_honoured(case: tuple[Recurrence, str, datetime | None]) -> None:
    rec, rule, _ = case
    fields = dict(part.split("=") for part in rule.split(";"))
    if "COUNT" not in fields:
        return
    count = int(fields["COUNT"])
    everything = preview(rec, None, count + 5)
    assert len(everything) == count
    assert next_due(rec, everything[-1].nominal) is None
    middle = everything[len(everything) // 2]
    assert preview(rec, middle.nominal, count) == everything[len(everything) // 2 + 1 :]


CALENDARS = [None, "DE", "DE-BY", "US-NY", "NYSE", "XECB", "GB", "AU"]


@PROPERTY
@given(
    day=st.dates(date(1995, 1, 1), date(2035, 12, 31)),
    convention=st.sampled_from(["following", "modified_following", "preceding"]),
    cal=st.sampled_from(CALENDARS),
)
def test_business_day_conventions(day: date, convention: str, cal: str | None) -> None:
    """The adjusted day is a business day, moved in the convention's direction past only
    non-business days; modified following never leaves the month."""

    def business(d: date) -> bool:  # straight from the holidays package
        if d.weekday() >= 5:
            return False
        if cal is None:
            return True
        if cal in holidays.list_supported_financial():
            return d not in holidays.financial_holidays(cal, years=d.year)
        country, _, sub = cal.partition("-")
        return d not in holidays.country_holidays(country, subdiv=sub or None, years=d.year)

    def between(a: date, b: date) -> list[date]:
        return [a + timedelta(days=i) for i in range(1, (b - a).days)]

    moved = adjust_business_day(day, convention, cal)
    assert business(moved)
    if business(day):
        assert moved == day
        return
    if convention == "following" or (convention == "modified_following" and moved > day):
        assert moved > day and not any(map(business, between(day, moved)))
    else:
        assert moved < day and not any(map(business, between(moved, day)))
    if convention == "modified_following":
        assert moved.month == day.month
        forward = adjust_business_day(day, "following", cal)
        assert moved == (
            forward if forward.month == day.month else adjust_business_day(day, "preceding", cal)
        )


@PROPERTY
@given(
    case=series_cases(),
    convention=st.sampled_from(["following", "modified_following", "preceding"]),
    cal=st.sampled_from(CALENDARS),
)
def test_adjusted_due_keeps_the_nominal_key_and_time_of_day(
    case: tuple[Recurrence, str, datetime | None], convention: str, cal: str | None
) -> None:
    plain, _, after = case
    rec = parse_recurrence(plain.rule, plain.start, plain.timezone, convention, cal)
    for moved, same in zip(preview(rec, after, 5), preview(plain, after, 5), strict=True):
        assert moved.nominal == same.nominal  # the key never moves
        if moved.due >= LAST - timedelta(days=7):
            break  # past the oracle's transitions (see oracle_dues)
        nominal_day = oracle_wall(moved.nominal, rec.timezone).date()
        wall_day = next(
            d
            for d in (nominal_day, nominal_day - timedelta(days=1))
            if oracle_resolve(datetime.combine(d, rec.start.time()), rec.timezone) == moved.nominal
        )
        target = adjust_business_day(wall_day, convention, cal)
        assert is_business_day(target, cal)
        expected = oracle_resolve(datetime.combine(target, rec.start.time()), rec.timezone)
        assert moved.due == expected


# --- any rule: answered or refused, within the work budget ------------------------------------


def numbers(low: int, high: int, signed: bool) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    if signed:
        value = st.one_of(value, value.map(lambda n: -n))
    return st.lists(value, min_size=1, max_size=6).map(lambda v: ",".join(map(str, v)))


ORDINALS = ["", "1", "2", "-1", "+3", "5", "-5", "53"]
WEEKDAY_PART = st.builds("{}{}".format, st.sampled_from(ORDINALS), st.sampled_from(DAYNAMES))
SUPPORTED_PARTS = {
    "INTERVAL": st.one_of(st.integers(1, 1000).map(str), st.sampled_from(["0", "1001", "2,3"])),
    "COUNT": st.integers(1, 10_000).map(str),
    "UNTIL": st.one_of(
        st.dates(date(1990, 1, 1), date(2400, 12, 31)).map(lambda d: f"{d:%Y%m%d}"),
        st.sampled_from(["20991231T090000", "20300101T080000Z", "2030"]),
    ),
    "BYMONTH": numbers(1, 12, signed=False),
    # Every day and every weekday too: the sets that BYSETPOS=29.. never reaches.
    "BYMONTHDAY": st.one_of(numbers(1, 31, signed=True), st.just(",".join(map(str, range(1, 29))))),
    "BYDAY": st.one_of(
        st.lists(WEEKDAY_PART, min_size=1, max_size=7).map(",".join), st.just(",".join(DAYNAMES))
    ),
    "BYSETPOS": numbers(1, 366, signed=True),
    "WKST": st.sampled_from(DAYNAMES),
}
# RFC 5545 parts paysched does not take: refused, naming the rule.
OTHER_PARTS = {
    "BYYEARDAY": numbers(1, 366, signed=True),
    "BYWEEKNO": numbers(1, 53, signed=True),
    "BYHOUR": numbers(0, 23, signed=False),
    "BYMINUTE": numbers(0, 59, signed=False),
}


UTCS = st.just(UTC)


@st.composite
def rfc5545_rules(draw: st.DrawFn) -> str:
    """FREQ (now and then one paysched refuses) and any other parts, in any order."""
    freqs = ["DAILY", "WEEKLY", "MONTHLY", "YEARLY"] * 8 + ["HOURLY", "MINUTELY", "SECONDLY"]
    names = draw(st.lists(st.sampled_from(sorted(SUPPORTED_PARTS)), max_size=5, unique=True))
    if draw(st.integers(0, 9)) == 0:
        names.append(draw(st.sampled_from(sorted(OTHER_PARTS))))
    parts = [f"FREQ={draw(st.sampled_from(freqs))}"]
    parts += [f"{n}={draw((SUPPORTED_PARTS | OTHER_PARTS)[n])}" for n in names]
    return ";".join(draw(st.permutations(parts)))


@PROPERTY
@example(rule=NEVER, start=datetime(2026, 1, 1, 9), zone="UTC", after=None, count=12)
@example(rule=SPARSE, start=datetime(2026, 1, 1, 9), zone="UTC", after=None, count=1000)
@example(
    rule="FREQ=YEARLY;COUNT=10000",
    start=datetime(2026, 1, 1, 9),
    zone="UTC",
    after=None,
    count=1000,
)
@given(
    rule=rfc5545_rules(),
    start=st.datetimes(datetime(1990, 1, 1), datetime(2060, 12, 31)).map(
        lambda d: d.replace(second=0, microsecond=0)
    ),
    zone=st.sampled_from(ZONES),
    after=st.none() | st.datetimes(datetime(1990, 1, 1), datetime(2200, 1, 1), timezones=UTCS),
    count=st.integers(1, 1000),
)
def test_any_rule_is_answered_or_refused_within_the_budget(
    rule: str, start: datetime, zone: str, after: datetime | None, count: int
) -> None:
    """Checking a rule accepts it or refuses it naming the rule; an accepted rule gives its
    next date, and a preview of up to 1000 or a refusal naming count and the budget. None of
    it walks past its budget: the bounded time of each example, as work."""
    with walked() as months:
        try:
            rec = parse_recurrence(rule, start, zone)
        except InvalidInput as exc:
            assert exc.field == "rrule" and exc.problem
            rec = None
    # The first date's search, and a COUNT series expanded whole.
    assert months[0] <= DATE_BUDGET + REQUEST_BUDGET + 24
    if rec is None:
        return
    whole = REQUEST_BUDGET if "COUNT" in rec.rule else 0  # a COUNT series, once per rule
    with walked() as months:
        first = next_due(rec, after)
    assert months[0] <= DATE_BUDGET + whole + 12
    with walked() as months:
        try:
            dues: list[Due] | None = preview(rec, after, count)
        except InvalidInput as exc:
            assert exc.field == "count" and "search budget" in exc.problem
            dues = None
    assert months[0] <= REQUEST_BUDGET + whole + 12
    if dues is not None:
        assert len(dues) <= count and (dues[0] if dues else None) == first
        assert all(after is None or d.nominal > after for d in dues)
        assert all(a.nominal < b.nominal for a, b in pairwise(dues))
