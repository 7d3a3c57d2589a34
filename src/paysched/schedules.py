"""Scheduling maths as pure functions of an explicit time. No clock is read here."""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, croniter

from paysched.errors import InvalidInput

# ASCII digits only ('\d' would take any script's digits).
_DURATION_RE = re.compile(r"\A\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)\s*\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Longer than any schedule or setting needs, and far inside what datetime can add.
MAX_DURATION = timedelta(days=3660)
# Due times within this window; past it a year is a typo, not a plan.
LATEST_DUE = datetime(9000, 1, 1, tzinfo=UTC)
MAX_CRON_LENGTH = 120  # the column's width


def parse_duration(text: str, field: str = "duration") -> timedelta:
    """'30s', '5m', '250ms', '2h', '1d' -> timedelta."""
    match = _DURATION_RE.match(text)
    if not match:
        raise InvalidInput(field, f"expected a duration like 30s, 5m, 250ms, 2h, got {text!r}")
    seconds = Decimal(match.group(1)) * Decimal(str(_UNIT_SECONDS[match.group(2)]))
    if seconds > Decimal(MAX_DURATION.total_seconds()):
        raise InvalidInput(field, f"at most {MAX_DURATION.days}d, got {text!r}")
    return timedelta(seconds=float(seconds))


def parse_instant(text: str, field: str = "at") -> datetime:
    """An ISO-8601 timestamp that carries its offset ('2026-12-01T09:00:00+01:00' or '...Z')."""
    raw = text.strip()
    try:
        if not raw.isascii():
            raise ValueError(raw)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            field, f"expected ISO-8601 like 2026-12-01T09:00:00+01:00, got {text!r}"
        ) from None
    return check_instant(value, field, text)


def check_instant(value: datetime, field: str = "at", text: str | None = None) -> datetime:
    """An aware datetime within range, in UTC; `text` is how the caller wrote it."""
    shown = value.isoformat() if text is None else text
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, f"{shown!r} has no UTC offset; add one like +00:00 or Z")
    try:
        instant = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last representable UTC time
        raise InvalidInput(field, f"{shown!r} is out of range") from None
    if instant >= LATEST_DUE:
        raise InvalidInput(field, f"{shown!r} is out of range (before {LATEST_DUE.year})")
    return instant


@functools.cache
def _zone_names() -> frozenset[str]:
    # The tz database's names. ZoneInfo opens any file under the zoneinfo directories,
    # and beside the zones they hold this host's own local time ("localtime", which moves with
    # the host), the compiler's default rules ("posixrules"), a placeholder ("Factory") and
    # copies of every zone with and without leap seconds ("right/...", "posix/...").
    return frozenset(
        name
        for name in available_timezones()
        if name not in ("localtime", "posixrules", "Factory")
        and not name.startswith(("right/", "posix/"))
    )


def parse_timezone(name: str, field: str = "timezone") -> ZoneInfo:
    if name not in _zone_names():
        raise InvalidInput(field, f"unknown time zone {name!r} (use an IANA name)")
    return ZoneInfo(name)


def validate_cron(expr: str, field: str = "cron", allow_seconds: bool = False) -> str:
    if len(expr) > MAX_CRON_LENGTH or not expr.isascii() or not expr.isprintable():
        raise InvalidInput(
            field,
            f"expected a cron expression of at most {MAX_CRON_LENGTH} printable ASCII characters",
        )
    fields = expr.split()
    allowed = (5, 6) if allow_seconds else (5,)
    valid = len(fields) in allowed and croniter.is_valid(expr, second_at_beginning=len(fields) == 6)
    if not valid:
        shape = "5 or 6 fields (seconds first)" if allow_seconds else "5 fields"
        raise InvalidInput(field, f"not a valid cron expression with {shape}: {expr!r}")
    try:  # "0 0 30 2 *" is well-formed and never fires
        next_cron(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except InvalidInput as exc:
        raise InvalidInput(field, exc.problem) from None
    return expr


def next_cron(expr: str, after: datetime, tz: str | None = None) -> datetime:
    """The first time strictly after `after` matching `expr`, evaluated in time zone `tz`.

    Evaluating in the payment's own zone is what makes "09:00 every Monday in Berlin" stay at
    09:00 local across DST changes; the result is returned in UTC.
    """
    zone = ZoneInfo(tz or "UTC")
    # Iterate over naive wall-clock times and resolve each with `resolve_local`: croniter's own
    # arithmetic on aware datetimes lands an hour off on DST transition days. A wall time that
    # the zone skips (spring forward) runs at the first instant after the gap; one it repeats
    # (fall back) runs once, at its first occurrence: the same rule as recurrence rules
    # (paysched.recurrence), so a cron and an RRULE payment agree on every transition.
    # Six fields mean seconds first, as everywhere in paysched (croniter's own default puts
    # them last); payments created through the CLI or HTTP have five.
    wall = croniter(
        expr,
        after.astimezone(zone).replace(tzinfo=None),
        second_at_beginning=len(expr.split()) == 6,
    )
    while True:
        try:
            local: datetime = wall.get_next(datetime)
        except CroniterBadDateError:
            raise InvalidInput("cron", f"{expr!r} never matches a date") from None
        # Walls at or before `after`'s own wall time resolve at or before it; only the walls in
        # a repeated hour can still resolve before `after`, so this loop ends within that hour.
        candidate = resolve_local(local, zone)
        if candidate > after:
            return candidate


def last_cron(expr: str, at: datetime) -> datetime:
    """The latest time at or before `at` matching `expr` in UTC (a process's own schedule,
    PAYSCHED_RECONCILE_CRON: the fire missed while no process ran)."""
    at = at.astimezone(UTC)
    if next_cron(expr, at - timedelta(microseconds=1)) == at:
        return at  # a fire time is its own last
    wall = croniter(expr, at.replace(tzinfo=None), second_at_beginning=len(expr.split()) == 6)
    prev: datetime = wall.get_prev(datetime)
    return prev.replace(tzinfo=UTC)


def resolve_local(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in `zone` -> the aware UTC instant it stands for.

    It is the first instant at which the zone's clock reads `wall` or later:
    - a normal wall time: its one instant;
    - one the clock passes twice (fall back): the first instance (fold=0);
    - one the clock skips (spring forward): the transition instant itself, the first valid
      instant after the gap (02:30 on Berlin's spring-forward day -> 03:00 CEST = 01:00 UTC),
      never 03:30 (what fold=0 alone gives: the gap's length added on) and never a skip.
    Any zone and any shift: 30 minutes (Australia/Lord_Howe), 45-minute offsets, a whole day
    (Pacific/Apia, 2011-12-30).
    """
    naive = wall.replace(tzinfo=None, fold=0)
    # fold=0 reads the wall time with the offset in force before a transition.
    first = naive.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first  # it exists; in an overlap fold=0 is the earlier instance
    # In a gap, fold=0 (the earlier offset) lands after the transition and fold=1 (the later
    # offset) before it. zoneinfo does not expose the transition itself: find it by bisection
    # on whole seconds (tz transitions fall on whole seconds), at most ~17 steps for a day.
    before = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low = math.floor(before.timestamp())  # wall(low) < naive
    high = math.ceil(first.timestamp())  # wall(high) >= naive
    if low >= high or _wall_at(high, zone) < naive or _wall_at(low, zone) >= naive:
        return first  # not the shape of a gap after all: keep zoneinfo's own reading
    while high - low > 1:
        middle = (low + high) // 2
        if _wall_at(middle, zone) >= naive:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _wall_at(seconds: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(seconds, zone).replace(tzinfo=None)
