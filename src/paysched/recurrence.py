"""Recurring schedules: RFC 5545 recurrence rules in a local time zone, with month-end clamping
and business-day adjustment. Pure functions of explicit values: no database, no clock.

The supported subset of RFC 5545's RRULE (anything else is refused, naming the part):

    FREQ=DAILY|WEEKLY|MONTHLY|YEARLY   required
    INTERVAL=n                         1..1000 (every n days/weeks/months/years)
    BYMONTH=1..12,...
    BYMONTHDAY=±1..31,...              negative days count from the month's end (-1 = last)
    BYDAY=MO,...                       with an ordinal (2MO, -1FR) only for MONTHLY and YEARLY
    BYSETPOS=±n,...                    needs another BY part
    WKST=MO..SU                        the week's first day (matters for WEEKLY with INTERVAL)
    COUNT=n                            1..10000, counted from the start
    UNTIL=20261231 | 20261231T090000 | 20261231T080000Z
                                       a date (through that local day), a local wall time, or
                                       a UTC instant (Z); inclusive; never with COUNT

No BYHOUR/BYMINUTE/BYSECOND: a payment's time of day is the start's, one occurrence a day at
most. Where paysched departs from RFC 5545, on purpose:

- Month-end clamping. A MONTHLY or YEARLY rule anchored on day 29, 30 or 31 - written as
  BYMONTHDAY=29..31 (without BYDAY), or implied by the start's day when the rule has neither
  BYMONTHDAY nor BYDAY - falls on the month's last day in shorter months and keeps its anchor:
  Jan 31 -> Feb 28/29 -> Mar 31 -> Apr 30; a yearly Feb 29 falls on Feb 28 in common years.
  RFC 5545 skips those months instead, which for a rent or a salary is a missed payment.
  A day that no month the rule allows ever has (BYMONTHDAY=30;BYMONTH=2) is refused, and so is
  BYSETPOS beside a clamped day (the union would be ambiguous; use BYMONTHDAY=-1).
- The start is a lower bound and the anchor of the rule's phase and defaults, as in dateutil:
  it is an occurrence only when it matches the rule (RFC 5545 always counts DTSTART).
- Time zones: a wall time the zone skips (spring forward) runs at the first valid instant
  after the gap; one it repeats (fall back) runs once, at its first instance. See
  `resolve_local`.

Business days: Monday..Friday, less the holidays of a calendar from the `holidays` package:
a country "DE", a country with a subdivision "DE-BY", "US-NY" (ISO 3166-1 alpha-2, then the
package's subdivision code), or a financial market by its MIC or the package's alias: "NYSE",
"XNYS", "XECB", "ECB", "XLON"... (`holidays.list_supported_financial()`). Without a calendar
only weekends move a payment. An occurrence's identity is always its nominal date: moving it
off a holiday changes when it runs (`Due.due`), never which occurrence it is (`Due.nominal`).
"""

from __future__ import annotations

import calendar as monthcal
import heapq
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule as du

from paysched.errors import InvalidInput
from paysched.schedules import LATEST_DUE, parse_timezone, resolve_local

__all__ = [
    "BUSINESS_DAY_CONVENTIONS",
    "Due",
    "Recurrence",
    "describe",
    "next_due",
    "parse_recurrence",
    "preview",
    "resolve_local",
]

BUSINESS_DAY_CONVENTIONS = ("none", "following", "modified_following", "preceding")
MAX_RULE_LENGTH = 200
MAX_COUNT = 10_000  # a COUNT series is expanded once and kept: bounded so that stays cheap
MAX_INTERVAL = 1000
EARLIEST_START = datetime(1900, 1, 1)
LATEST_START = datetime(8900, 1, 1)
# Past this wall time a series ends: its instants could not be stored (schedules.LATEST_DUE).
_LAST_WALL = (LATEST_DUE - timedelta(days=2)).replace(tzinfo=None)
# How far a new rule is searched for its first date: a rule with none in a century is refused.
_HORIZON_YEARS = 100
# The work of an expansion, in months of calendar that dateutil walks (a YEARLY period counts
# 12: dateutil examines each of its days). dateutil itself has no bound: a rule without
# another date walks on to the year 9999, UNTIL or not (it stops only at a date past UNTIL),
# which a sparse rule turned into seconds of CPU per request. A date is searched for over at
# most a century of months: none that far ahead, and the series has ended (a new rule is
# refused). One request - a preview, a COUNT series expanded whole - walks at most four.
DATE_BUDGET = _HORIZON_YEARS * 12
REQUEST_BUDGET = 4 * DATE_BUDGET

_FREQS = {"DAILY": du.DAILY, "WEEKLY": du.WEEKLY, "MONTHLY": du.MONTHLY, "YEARLY": du.YEARLY}
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_PARTS = (
    "FREQ",
    "INTERVAL",
    "BYMONTH",
    "BYMONTHDAY",
    "BYDAY",
    "BYSETPOS",
    "WKST",
    "COUNT",
    "UNTIL",
)
_INT_RE = re.compile(r"\A[+-]?[0-9]{1,5}\Z")
_BYDAY_RE = re.compile(r"\A([+-]?[0-9]{1,2})?(MO|TU|WE|TH|FR|SA|SU)\Z")
_UNTIL_RE = re.compile(r"\A([0-9]{8})(?:T([0-9]{6})(Z)?)?\Z")
# The longest each month can be (February in leap years).
_MONTH_MAX = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MONTH_NAMES = tuple(monthcal.month_name)
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A validated recurring schedule; build it with `parse_recurrence` (or `from_json`)."""

    rule: str  # canonical RRULE body, e.g. "FREQ=MONTHLY;BYMONTHDAY=-1"
    start: datetime  # naive local wall time of the first possible occurrence, in `timezone`
    timezone: str  # IANA name
    business_day: str = "none"  # one of BUSINESS_DAY_CONVENTIONS
    calendar: str | None = None  # holidays calendar, canonical ("DE", "DE-BY", "NYSE")

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, so equal schedules store equal text."""
        return json.dumps(
            {
                "v": 1,
                "rule": self.rule,
                "start": self.start.isoformat(),
                "timezone": self.timezone,
                "business_day": self.business_day,
                "calendar": self.calendar,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Recurrence:
        """The inverse of `to_json`; validated again (stored text may predate a rule change)."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") != 1:
                raise ValueError(text)
            rule, start, zone = data["rule"], data["start"], data["timezone"]
            business_day, cal = data.get("business_day", "none"), data.get("calendar")
            if not all(isinstance(v, str) for v in (rule, start, zone, business_day)):
                raise ValueError(text)
            if cal is not None and not isinstance(cal, str):
                raise ValueError(text)
        except (ValueError, KeyError, TypeError):
            raise InvalidInput("recurrence", "not a stored recurrence (version 1 JSON)") from None
        return parse_recurrence(rule, start, zone, business_day, cal, search=False)


@dataclass(frozen=True, slots=True)
class Due:
    """One occurrence: `nominal` is its identity (the key), `due` is when it runs."""

    nominal: datetime  # aware UTC: the rule's date at its time of day, before adjustment
    due: datetime  # aware UTC: after business-day adjustment, same local time of day


# --- the work budget ---------------------------------------------------------------------


class _OutOfBudget(Exception):
    def __init__(self, whole: bool) -> None:
        super().__init__("request" if whole else "date")
        self.whole = whole  # the expansion's REQUEST_BUDGET ran out, not one date's search


@dataclass(slots=True)
class _Walk:
    """What one expansion has walked, in months (see DATE_BUDGET)."""

    budget: int  # for the whole expansion
    since_date: int = 0  # since the last date found
    spent: int = 0

    def spend(self, months: int) -> None:
        self.since_date += months
        self.spent += months
        if self.spent > self.budget:
            raise _OutOfBudget(whole=True)
        if self.since_date > DATE_BUDGET:
            raise _OutOfBudget(whole=False)


class _MeteredRule(du.rrule):  # type: ignore[misc]
    """dateutil's rrule, charging its walk to `walk`."""

    def __init__(self, walk: _Walk, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.walk = walk


class _MeteredInfo(du._iterinfo):  # type: ignore[misc]
    """dateutil's calendar masks, which its iteration rebuilds for every month (DAILY, WEEKLY,
    MONTHLY) or year (YEARLY) it walks, matching or not: the one place where the walk can be
    counted and stopped, since dateutil has no hook of its own. Inert for other rrules. (No
    __slots__: dateutil's __init__ sets the attributes named by `self.__slots__`.)"""

    def rebuild(self, year: int, month: int) -> None:
        if isinstance(self.rrule, _MeteredRule):
            self.rrule.walk.spend(12 if self.rrule._freq == du.YEARLY else 1)
        super().rebuild(year, month)


du._iterinfo = _MeteredInfo  # rrule._iter looks the class up here at each iteration


# --- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    freq: str
    interval: int = 1
    bymonth: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byday: tuple[tuple[int, int], ...] = ()  # (ordinal, weekday 0=Monday); ordinal 0 = every
    bysetpos: tuple[int, ...] = ()
    wkst: int = 0
    count: int | None = None
    until: str | None = None  # as written (canonical RFC form)


def _ints(text: str, key: str, low: int, high: int, field: str, signed: bool) -> tuple[int, ...]:
    values = []
    for item in text.split(","):
        if not _INT_RE.match(item):
            raise InvalidInput(field, f"{key} expects numbers separated by commas, got {text!r}")
        value = int(item)
        if not (low <= abs(value) <= high) or (value < 0 and not signed):
            shown = f"±{low}..{high}" if signed else f"{low}..{high}"
            raise InvalidInput(field, f"{key} values must be in {shown}, got {item}")
        values.append(value)
    return tuple(sorted(set(values)))


def _parse_rule(text: str, field: str) -> _Rule:
    if not isinstance(text, str):
        raise InvalidInput(field, "expected an RRULE like FREQ=MONTHLY;BYMONTHDAY=-1")
    raw = text.strip()
    if len(raw) > MAX_RULE_LENGTH or not raw.isascii() or not raw.isprintable():
        raise InvalidInput(
            field, f"expected an RRULE of at most {MAX_RULE_LENGTH} printable ASCII characters"
        )
    raw = raw.upper()
    raw = raw.removeprefix("RRULE:")
    parts: dict[str, str] = {}
    for piece in raw.rstrip(";").split(";"):
        key, sep, value = piece.partition("=")
        if not sep or not key or not value:
            raise InvalidInput(field, f"expected NAME=VALUE parts separated by ';', got {piece!r}")
        if key not in _PARTS:
            raise InvalidInput(
                field, f"unsupported RRULE part {key} (paysched supports {', '.join(_PARTS)})"
            )
        if key in parts:
            raise InvalidInput(field, f"{key} given twice")
        parts[key] = value
    freq = parts.get("FREQ")
    if freq is None:
        raise InvalidInput(field, "FREQ is required (DAILY, WEEKLY, MONTHLY or YEARLY)")
    if freq not in _FREQS:
        raise InvalidInput(field, f"unsupported FREQ={freq} (use DAILY, WEEKLY, MONTHLY or YEARLY)")
    interval = 1
    if "INTERVAL" in parts:
        if "," in parts["INTERVAL"]:  # before unpacking: "2,3" is two numbers, not a crash
            raise InvalidInput(field, "INTERVAL takes one number")
        (interval,) = _ints(parts["INTERVAL"], "INTERVAL", 1, MAX_INTERVAL, field, False)
    bymonth = _ints(parts["BYMONTH"], "BYMONTH", 1, 12, field, False) if "BYMONTH" in parts else ()
    bymonthday = (
        _ints(parts["BYMONTHDAY"], "BYMONTHDAY", 1, 31, field, True)
        if "BYMONTHDAY" in parts
        else ()
    )
    if bymonthday and freq == "WEEKLY":
        raise InvalidInput(field, "BYMONTHDAY cannot be used with FREQ=WEEKLY")
    byday: list[tuple[int, int]] = []
    if "BYDAY" in parts:
        for item in parts["BYDAY"].split(","):
            match = _BYDAY_RE.match(item)
            if not match:
                raise InvalidInput(
                    field, f"BYDAY expects days like MO, FR, 2MO or -1FR, got {item!r}"
                )
            ordinal = int(match.group(1) or 0)
            if ordinal and freq not in ("MONTHLY", "YEARLY"):
                raise InvalidInput(field, f"BYDAY={item}: an ordinal needs FREQ=MONTHLY or YEARLY")
            limit = 5 if freq == "MONTHLY" or (freq == "YEARLY" and "BYMONTH" in parts) else 53
            if match.group(1) is not None and not 1 <= abs(ordinal) <= limit:
                raise InvalidInput(field, f"BYDAY={item}: the ordinal must be ±1..{limit}")
            byday.append((ordinal, _WEEKDAYS.index(match.group(2))))
    bysetpos: tuple[int, ...] = ()
    if "BYSETPOS" in parts:
        # Each period holds at most this many dates (one time of day per date).
        most = {"DAILY": 1, "WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}[freq]
        bysetpos = _ints(parts["BYSETPOS"], "BYSETPOS", 1, most, field, True)
        if not (bymonth or bymonthday or byday):
            raise InvalidInput(field, "BYSETPOS needs another BY part (BYDAY, BYMONTHDAY...)")
    wkst = 0
    if "WKST" in parts:
        if parts["WKST"] not in _WEEKDAYS:
            raise InvalidInput(field, f"WKST must be one of {', '.join(_WEEKDAYS)}")
        wkst = _WEEKDAYS.index(parts["WKST"])
    count = None
    if "COUNT" in parts:
        if "," in parts["COUNT"]:
            raise InvalidInput(field, "COUNT takes one number")
        (count,) = _ints(parts["COUNT"], "COUNT", 1, MAX_COUNT, field, False)
    until = None
    if "UNTIL" in parts:
        if count is not None:
            raise InvalidInput(field, "COUNT and UNTIL cannot both be given (RFC 5545)")
        until = parts["UNTIL"]
        _until_bound(until, field)  # validates
    return _Rule(
        freq, interval, bymonth, bymonthday, tuple(sorted(set(byday))), bysetpos, wkst, count, until
    )


def _format_rule(rule: _Rule) -> str:
    parts = [f"FREQ={rule.freq}"]
    if rule.interval != 1:
        parts.append(f"INTERVAL={rule.interval}")
    if rule.bymonth:
        parts.append("BYMONTH=" + ",".join(map(str, rule.bymonth)))
    if rule.bymonthday:
        parts.append("BYMONTHDAY=" + ",".join(map(str, rule.bymonthday)))
    if rule.byday:
        days = (f"{n or ''}{_WEEKDAYS[d]}" for n, d in rule.byday)
        parts.append("BYDAY=" + ",".join(days))
    if rule.bysetpos:
        parts.append("BYSETPOS=" + ",".join(map(str, rule.bysetpos)))
    if rule.wkst:
        parts.append(f"WKST={_WEEKDAYS[rule.wkst]}")
    if rule.count is not None:
        parts.append(f"COUNT={rule.count}")
    if rule.until is not None:
        parts.append(f"UNTIL={rule.until}")
    return ";".join(parts)


def _until_bound(text: str, field: str) -> tuple[datetime | None, datetime | None]:
    """UNTIL -> (inclusive local wall bound, inclusive UTC bound); one of them is set."""
    match = _UNTIL_RE.match(text)
    try:
        if not match:
            raise ValueError(text)
        day = datetime.strptime(match.group(1), "%Y%m%d")
        if match.group(2) is None:  # a date: every occurrence on that local day
            return datetime.combine(day.date(), time.max), None
        wall = datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        raise InvalidInput(
            field,
            f"UNTIL must look like 20261231, 20261231T090000 or 20261231T080000Z, got {text!r}",
        ) from None
    if match.group(3):
        return None, wall.replace(tzinfo=UTC)
    return wall, None


def _parse_start(start: datetime | str, zone: ZoneInfo) -> datetime:
    if isinstance(start, str):
        raw = start.strip()
        try:
            if not raw.isascii() or not re.search(r"[0-9][Tt ][0-9]", raw):
                raise ValueError(raw)
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                "start",
                f"expected a local date and time of day like 2026-01-31T09:00, got {start!r}",
            ) from None
    elif isinstance(start, datetime):
        value = start
    else:
        raise InvalidInput("start", "expected a date and time of day like 2026-01-31T09:00")
    if value.tzinfo is not None:
        # An instant is taken as the wall time it shows in the schedule's own zone: the time
        # of day every later occurrence keeps.
        if value.utcoffset() is None:
            raise InvalidInput("start", f"{start!r} has a time zone without an offset")
        value = value.astimezone(zone).replace(tzinfo=None)
    if value.microsecond:
        raise InvalidInput("start", "give the time of day to the second at most")
    if not EARLIEST_START <= value < LATEST_START:
        raise InvalidInput(
            "start", f"must be between {EARLIEST_START.year} and {LATEST_START.year}"
        )
    return value.replace(fold=0)


def _parse_calendar(text: str) -> str:
    import holidays  # ~0.1 s to import: only when a calendar is used

    raw = text.strip()
    financial = holidays.list_supported_financial()
    if raw.upper() in financial:
        return raw.upper()
    country, _, subdivision = raw.partition("-")
    countries = holidays.list_supported_countries()
    if country.upper() not in countries:
        raise InvalidInput(
            "calendar",
            f"unknown holiday calendar {text!r}: use a country code "
            "like DE, a subdivision like DE-BY or US-NY, or a market like NYSE "
            "or XECB",
        )
    country = country.upper()
    if not subdivision:
        return country
    known = {s.upper(): s for s in countries[country]}
    if subdivision.upper() not in known:
        raise InvalidInput(
            "calendar",
            f"{country} has no subdivision {subdivision!r} (known: "
            f"{', '.join(sorted(known.values()))})",
        )
    return f"{country}-{known[subdivision.upper()]}"


def parse_recurrence(
    rule: str,
    start: datetime | str,
    timezone: str,
    business_day: str = "none",
    calendar: str | None = None,
    field: str = "rrule",
    *,
    search: bool = True,
) -> Recurrence:
    """Validate every part; raises InvalidInput naming the field ("rrule" or `field`, "start",
    "timezone", "business_day", "calendar").

    `start` is the local wall time in `timezone`: "2026-01-31T09:00" or a naive datetime. An
    aware datetime (or a string with an offset) is converted to its wall time in `timezone`.
    `search=False` leaves out the search for the first date and the COUNT series' expansion:
    for a stored rule, searched when it was made (a view of a payment walks no calendar).
    """
    parsed = _parse_rule(rule, field)
    if not isinstance(timezone, str):
        raise InvalidInput("timezone", "expected an IANA time zone name like Europe/Berlin")
    zone = parse_timezone(timezone, "timezone")
    wall = _parse_start(start, zone)
    if business_day not in BUSINESS_DAY_CONVENTIONS:
        raise InvalidInput(
            "business_day",
            f"expected one of {', '.join(BUSINESS_DAY_CONVENTIONS)}, got {business_day!r}",
        )
    canonical_calendar = _parse_calendar(calendar) if calendar else None
    rec = Recurrence(_format_rule(parsed), wall, zone.key, business_day, canonical_calendar)
    compiled = _compile(rec, field)
    if not search:
        return rec
    # Searched without COUNT, within a horizon and a budget (a rule that never matches would
    # make dateutil walk on to the year 9999; the horizon alone does not stop it).
    horizon = wall.replace(year=wall.year + _HORIZON_YEARS, day=min(wall.day, 28))
    try:
        first = next(_merge(compiled.components, wall, horizon, None, _Walk(DATE_BUDGET)), None)
    except _OutOfBudget:
        first = None
    if first is None:
        raise InvalidInput(
            field,
            f"{rec.rule} produces no date within {_HORIZON_YEARS} years "
            f"of {wall:%Y-%m-%d} (the search budget: {DATE_BUDGET} months "
            "of the rule's calendar)",
        )
    if compiled.count is not None and _count_series(compiled)[1]:
        raise InvalidInput(
            field,
            f"COUNT={compiled.count} spans more than the {REQUEST_BUDGET} "
            "months of the rule's calendar paysched expands at once (the "
            "search budget); give a smaller COUNT or an UNTIL",
        )
    if compiled.past_until(first, resolve_local(first, zone)):
        raise InvalidInput(
            field, f"UNTIL={parsed.until} is before the first occurrence ({first:%Y-%m-%dT%H:%M})"
        )
    return rec


# --- expansion ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # hashed by identity: _compile keeps one per rule
class _Compiled:
    """A rule made explicit: dateutil keyword sets whose union (deduplicated) is the series."""

    freq: str
    interval: int
    wkst: int
    start: datetime
    components: tuple[dict[str, Any], ...]
    count: int | None
    until_wall: datetime | None
    until_utc: datetime | None

    def walls(self, floor: datetime | None, walk: _Walk) -> Iterator[datetime]:
        """The series' naive wall times strictly after `floor` (all when None), in order;
        raises _OutOfBudget when `walk` runs out."""
        if self.count is not None:
            series, cut = _count_series(self)
            yield from (w for w in series if floor is None or w > floor)
            if cut:  # stored before COUNT was bounded (parse_recurrence refuses it now)
                raise _OutOfBudget(whole=True)
            return
        dtstart = self.start if floor is None else self._reanchor(floor)
        yield from _merge(self.components, dtstart, None, floor, walk)

    def past_until(self, wall: datetime, nominal: datetime) -> bool:
        if self.until_wall is not None and wall > self.until_wall:
            return True
        return self.until_utc is not None and nominal > self.until_utc

    def _reanchor(self, floor: datetime) -> datetime:
        """The start of the rule's period that holds `floor`, in the rule's INTERVAL phase.

        Expanding from there instead of from the start keeps `next_due` O(1) for a series of
        any length; every BY part is explicit in `components`, so nothing defaults from the
        new start but the phase, which this keeps. (COUNT series are expanded once instead.)
        """
        start, step = self.start, self.interval
        if floor <= start:
            return start
        if self.freq == "DAILY":
            k = (floor.date() - start.date()).days // step
            first = start.date() + timedelta(days=k * step)
        elif self.freq == "WEEKLY":
            week = start.date() - timedelta(days=(start.weekday() - self.wkst) % 7)
            k = (floor.date() - week).days // (7 * step)
            first = week + timedelta(days=7 * step * k)
        elif self.freq == "MONTHLY":
            months = (floor.year - start.year) * 12 + floor.month - start.month
            index = start.year * 12 + start.month - 1 + months // step * step
            first = date(index // 12, index % 12 + 1, 1)
        else:
            year = start.year + (floor.year - start.year) // step * step
            first = date(year, 1, 1)
        anchored = datetime.combine(first, time())
        return start if anchored <= start else anchored


def _merge(
    components: tuple[dict[str, Any], ...],
    dtstart: datetime,
    horizon: datetime | None,
    floor: datetime | None,
    walk: _Walk,
) -> Iterator[datetime]:
    rules = [
        _MeteredRule(walk, dtstart=dtstart, until=horizon, cache=False, **kw) for kw in components
    ]
    last = None
    for wall in heapq.merge(*rules):
        walk.since_date = 0  # a date: the search for the next one starts afresh
        if wall == last or (floor is not None and wall <= floor):
            continue
        last = wall
        yield wall


@lru_cache(maxsize=256)
def _count_series(compiled: _Compiled) -> tuple[tuple[datetime, ...], bool]:
    """A COUNT series in full: COUNT numbers occurrences from the start, so skipping ahead
    would need them all counted anyway; bounded by MAX_COUNT and REQUEST_BUDGET and kept per
    rule. Also says whether REQUEST_BUDGET cut it short (a series with a century and more
    between two dates ends there, as any series does)."""
    walls: list[datetime] = []
    try:
        for wall in _merge(compiled.components, compiled.start, None, None, _Walk(REQUEST_BUDGET)):
            walls.append(wall)
            if len(walls) == compiled.count:
                break
    except _OutOfBudget as out:
        return tuple(walls), out.whole
    return tuple(walls), False


def _clamped_days(rule: _Rule, bymonthday: tuple[int, ...]) -> tuple[int, ...]:
    if rule.freq not in ("MONTHLY", "YEARLY") or rule.byday:
        return ()
    return tuple(d for d in bymonthday if d >= 29)


@lru_cache(maxsize=1024)
def _compile(rec: Recurrence, field: str = "rrule") -> _Compiled:
    rule = _parse_rule(rec.rule, field)
    start = rec.start
    bymonth, bymonthday, byday = rule.bymonth, rule.bymonthday, rule.byday
    # dateutil fills missing BY parts from DTSTART; do it here, explicitly, so that a rule
    # expanded from a later period start (`_reanchor`) keeps the same days.
    if not bymonthday and not byday:
        if rule.freq == "WEEKLY":
            byday = ((0, start.weekday()),)
        elif rule.freq == "MONTHLY":
            bymonthday = (start.day,)
        elif rule.freq == "YEARLY":
            bymonth = bymonth or (start.month,)
            bymonthday = (start.day,)
    months = bymonth or tuple(range(1, 13))
    longest = max(_MONTH_MAX[m - 1] for m in months)
    for day in bymonthday:
        if abs(day) > longest:
            names = ", ".join(_MONTH_NAMES[m] for m in months)
            raise InvalidInput(
                field,
                f"day {day} never falls in {names}; for the month's last day use BYMONTHDAY=-1",
            )
    clamped = _clamped_days(rule, bymonthday)
    if clamped and rule.bysetpos:
        raise InvalidInput(
            field,
            f"BYSETPOS cannot be combined with BYMONTHDAY="
            f"{','.join(map(str, clamped))}, which paysched clamps to the "
            "month's end; for the last day use BYMONTHDAY=-1",
        )
    base: dict[str, Any] = {
        "freq": _FREQS[rule.freq],
        "interval": rule.interval,
        "wkst": rule.wkst,
        "byhour": start.hour,
        "byminute": start.minute,
        "bysecond": start.second,
    }
    weekdays = tuple(du.weekday(d, n or None) for n, d in byday) or None
    components: list[dict[str, Any]] = []
    plain = tuple(d for d in bymonthday if d not in clamped)
    if plain or not clamped:
        components.append(
            {
                **base,
                "bymonth": bymonth or None,
                "bymonthday": plain or None,
                "byweekday": weekdays,
                "bysetpos": rule.bysetpos or None,
            }
        )
    for day in clamped:
        # The last of the days 28..day that the month has: `day` itself, or the month's last
        # day when it is shorter. For YEARLY, bysetpos counts over the whole year, so one set
        # per month.
        span = tuple(range(28, day + 1))
        if rule.freq == "MONTHLY":
            components.append(
                {**base, "bymonth": bymonth or None, "bymonthday": span, "bysetpos": -1}
            )
        else:
            for month in months:
                components.append({**base, "bymonth": month, "bymonthday": span, "bysetpos": -1})
    until_wall, until_utc = _until_bound(rule.until, field) if rule.until else (None, None)
    return _Compiled(
        rule.freq,
        rule.interval,
        rule.wkst,
        start,
        tuple(components),
        rule.count,
        until_wall,
        until_utc,
    )


# --- occurrences -------------------------------------------------------------------------


def _dues(rec: Recurrence, after: datetime | None, walk: _Walk) -> Iterator[Due]:
    if after is not None and (after.tzinfo is None or after.utcoffset() is None):
        raise ValueError("after must be an aware datetime")
    compiled = _compile(rec)
    zone = ZoneInfo(rec.timezone)
    # A wall time at or before `after`'s own wall time resolves at or before `after` (a wall
    # time resolves to the first instant the clock reads it or later), so the search starts
    # there; only walls in a repeated hour can still resolve at or before `after`.
    floor = None if after is None else after.astimezone(zone).replace(tzinfo=None, fold=0)
    for wall in compiled.walls(floor, walk):
        if wall >= _LAST_WALL:
            return
        nominal = resolve_local(wall, zone)
        if compiled.past_until(wall, nominal):
            return
        if after is not None and nominal <= after:
            continue
        day = adjust_business_day(wall.date(), rec.business_day, rec.calendar)
        due = (
            nominal
            if day == wall.date()
            else resolve_local(datetime.combine(day, wall.time()), zone)
        )
        yield Due(nominal, due)


def next_due(rec: Recurrence, after: datetime | None) -> Due | None:
    """The first occurrence whose nominal instant is strictly after `after` (aware; None: the
    rule's first), or None when the series has ended (COUNT, UNTIL, or no date within the
    DATE_BUDGET's century of search)."""
    try:
        return next(_dues(rec, after, _Walk(DATE_BUDGET)), None)
    except _OutOfBudget:
        return None


def preview(rec: Recurrence, after: datetime | None, count: int) -> list[Due]:
    """The next `count` occurrences after `after`, as successive `next_due` calls give them;
    InvalidInput naming "count" when finding them would walk more than REQUEST_BUDGET."""
    found: list[Due] = []
    dues = _dues(rec, after, _Walk(REQUEST_BUDGET))
    try:
        while len(found) < count:
            due = next(dues, None)
            if due is None:
                break
            found.append(due)
    except _OutOfBudget as out:
        if out.whole:
            raise InvalidInput(
                "count",
                f"the next {count} dates of {rec.rule} span more than "
                f"the {REQUEST_BUDGET} months of its calendar one request "
                f"may search (the search budget; {len(found)} found); "
                "ask for fewer",
            ) from None
    return found


# --- business days -----------------------------------------------------------------------


@lru_cache(maxsize=512)
def _holidays(calendar: str, year: int) -> frozenset[date]:
    import holidays

    if calendar in holidays.list_supported_financial():
        found = holidays.financial_holidays(calendar, years=year)
    else:
        country, _, subdivision = calendar.partition("-")
        found = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
    return frozenset(found.keys())


def is_business_day(day: date, calendar: str | None) -> bool:
    """Monday..Friday and not a holiday of `calendar` (weekends only when None)."""
    if day.weekday() >= 5:
        return False
    return calendar is None or day not in _holidays(calendar, day.year)


def adjust_business_day(day: date, convention: str, calendar: str | None) -> date:
    """`day` moved by the convention when it is not a business day (ISDA's conventions)."""
    if convention == "none" or is_business_day(day, calendar):
        return day
    if convention == "preceding":
        return _step(day, -1, calendar)
    following = _step(day, 1, calendar)
    if convention == "modified_following" and following.month != day.month:
        return _step(day, -1, calendar)  # never into the next month: the one before instead
    return following


def _step(day: date, direction: int, calendar: str | None) -> date:
    for _ in range(366):  # a calendar closed for a year would be a broken calendar
        day += timedelta(days=direction)
        if is_business_day(day, calendar):
            return day
    raise ValueError(f"no business day within a year of {day} in {calendar}")


# --- describe ----------------------------------------------------------------------------


def _ordinal(n: int) -> str:
    if n == -1:
        return "last"
    if n < 0:
        return f"{_ordinal(-n)}-to-last"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe(rec: Recurrence) -> str:
    """One line for people, e.g. "monthly on the last day at 09:00 Europe/Berlin, following
    business day (DE)"."""
    rule = _parse_rule(rec.rule, "rrule")
    unit = {"DAILY": "day", "WEEKLY": "week", "MONTHLY": "month", "YEARLY": "year"}[rule.freq]
    text = rule.freq.lower() if rule.interval == 1 else f"every {rule.interval} {unit}s"
    start = rec.start
    days: list[str] = []
    for day in rule.bymonthday:
        if day == -1:
            days.append("the last day")
        elif day < 0:
            days.append(f"the {_ordinal(day)} day")
        else:
            days.append(
                f"day {day}"
                + (" (or the month's last)" if day >= 29 and _clamped_days(rule, (day,)) else "")
            )
    for n, weekday in rule.byday:
        days.append(f"the {_ordinal(n)} {_DAY_NAMES[weekday]}" if n else _DAY_NAMES[weekday])
    if not days:  # the start's day, as the rule takes it
        if rule.freq == "WEEKLY":
            days.append(_DAY_NAMES[start.weekday()])
        elif rule.freq == "MONTHLY":
            days.append(f"day {start.day}" + (" (or the month's last)" if start.day >= 29 else ""))
        elif rule.freq == "YEARLY" and not rule.bymonth:
            days.append(f"{start.day} {_MONTH_NAMES[start.month]}")
        elif rule.freq == "YEARLY":
            days.append(f"day {start.day}")
    if days:
        on = _join(days)
        if rule.bysetpos:
            on = f"the {_join([_ordinal(p) for p in rule.bysetpos])} of {on}"
        text += f" on {on}"
    if rule.bymonth:
        text += " in " + _join([_MONTH_NAMES[m] for m in rule.bymonth])
    text += f" at {start:%H:%M}" + (f":{start:%S}" if start.second else "") + f" {rec.timezone}"
    text += f", from {start:%Y-%m-%d}"
    if rule.count is not None:
        text += f", {rule.count} time" + ("s" if rule.count != 1 else "")
    if rule.until is not None:
        wall, instant = _until_bound(rule.until, "rrule")
        bound = wall or instant
        assert bound is not None
        text += f" until {bound:%Y-%m-%d}"
        if instant is not None:
            text += f" {bound:%H:%M} UTC"
        elif wall is not None and wall.time() != time.max:
            text += f" {bound:%H:%M}"
    if rec.business_day != "none":
        where = rec.calendar or "weekends only"
        text += f", {rec.business_day.replace('_', ' ')} business day ({where})"
    return text
