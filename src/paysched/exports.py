"""Exports (`paysched export`, GET /v1/exports/{kind}) and statements (`paysched statement`,
GET /v1/accounts/{name}/statement): the checked request, the columns of each kind, and the
encoding of rows as CSV or JSON Lines, one page at a time (db/store/exports.py reads them).

Every value is text a spreadsheet or a program reads without guessing: amounts are decimal
strings in the currency's minor-unit exponent (integer arithmetic, never a float) with the
currency in a column of its own, times are ISO 8601 in UTC with `Z`, accounts are named, not
numbered. Notification targets (`notify`: chat ids, webhook URLs that may carry a token) are
not exported at all; an occurrence's `reason` (an executor's message) is redacted.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from paysched.db.store.exports import EXPORT_KINDS, EXPORT_PAGE, StatementData
from paysched.domain import currency_exponent
from paysched.errors import InvalidInput
from paysched.redaction import redact
from paysched.schedules import check_instant, parse_instant

FORMATS = ("csv", "jsonl")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}

# The columns of each kind, in order: the CSV header and the keys of each JSON line.
COLUMNS: dict[str, tuple[str, ...]] = {
    "payments": (
        "id",
        "created_at",
        "updated_at",
        "state",
        "payer",
        "payee",
        "amount",
        "currency",
        "due_at",
        "schedule",
        "next_due_at",
        "catchup",
        "memo",
    ),
    "occurrences": (
        "id",
        "key",
        "payment_id",
        "due_at",
        "nominal_at",
        "state",
        "attempts",
        "amount",
        "currency",
        "payer",
        "payee",
        "reference",
        "reason",
        "started_at",
        "finished_at",
        "created_at",
        "updated_at",
    ),
    "ledger": (
        "id",
        "created_at",
        "account",
        "amount",
        "currency",
        "kind",
        "transfer_id",
        "payment_id",
        "occurrence_key",
        "counterparty",
    ),
}
# Which time bounds each kind's period (--from inclusive, --to exclusive).
PERIOD_COLUMN = {"payments": "created_at", "occurrences": "due_at", "ledger": "created_at"}

_DAY = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_MONTH = re.compile(r"\A([0-9]{4})-([0-9]{2})\Z")


@dataclass(frozen=True, slots=True)
class ExportRequest:
    kind: str
    format: str
    start: datetime
    end: datetime

    @property
    def filename(self) -> str:
        """paysched-occurrences-20270101T000000Z-20270201T000000Z.csv"""
        stamp = "%Y%m%dT%H%M%SZ"
        return (
            f"paysched-{self.kind}-{self.start.strftime(stamp)}-{self.end.strftime(stamp)}"
            f".{self.format}"
        )


def parse_bound(text: str | None, field: str) -> datetime:
    """A day (YYYY-MM-DD: its midnight UTC) or an ISO 8601 instant with its offset."""
    if text is None or not text.strip():
        raise InvalidInput(field, "required: a date (2027-01-01) or an instant with its offset")
    raw = text.strip()
    if _DAY.match(raw):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(field, f"not a date: {text!r}") from None
        return check_instant(datetime(day.year, day.month, day.day, tzinfo=UTC), field, raw)
    return parse_instant(raw, field)


def export_request(
    kind: str,
    fmt: str,
    start: str | None,
    end: str | None,
    *,
    from_field: str = "from",
    to_field: str = "to",
) -> ExportRequest:
    """The export asked for, checked; InvalidInput naming the field otherwise."""
    if kind not in EXPORT_KINDS:
        raise InvalidInput("kind", f"expected one of {', '.join(EXPORT_KINDS)}, got {kind!r}")
    if fmt not in FORMATS:
        raise InvalidInput("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    begin, until = parse_bound(start, from_field), parse_bound(end, to_field)
    if until <= begin:
        raise InvalidInput(to_field, f"must be later than {from_field}")
    return ExportRequest(kind, fmt, begin, until)


def parse_month(text: str | None, field: str = "month") -> tuple[datetime, datetime]:
    """YYYY-MM -> its first instant and the next month's, in UTC."""
    match = _MONTH.match((text or "").strip())
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
        raise InvalidInput(field, f"expected a month like 2027-01, got {text!r}")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    if year == 9999 and month == 12:
        raise InvalidInput(field, f"{text!r} is out of range")
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return check_instant(start, field, text), check_instant(end, field, text)


# -- values --------------------------------------------------------------------------------------


def decimal_string(minor: int, currency: str) -> str:
    """1234 USD -> '12.34', -5 KWD -> '-0.005', 100 JPY -> '100': exact, by integer arithmetic
    (the same text as domain.format_amount, several times faster: an export formats millions)."""
    exponent = currency_exponent(currency)
    if exponent == 0:
        return str(minor)
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{'-' if minor < 0 else ''}{whole}.{fraction:0{exponent}d}"


def utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with Z, to the microsecond as stored: 2027-01-05T09:00:00.000000Z."""
    if value is None:
        return None
    if value.tzinfo is not UTC:  # the store answers in UTC already (UTCDateTime): rarely taken
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"


@functools.lru_cache(maxsize=256)
def _rule_text(recurrence: str) -> str:
    from paysched.recurrence import Recurrence, describe

    return describe(Recurrence.from_json(recurrence))


def _schedule(row: Any) -> str | None:
    """As `paysched show` says it; None for a one-time payment."""
    if row.recurrence is not None:
        return _rule_text(row.recurrence)
    if row.cron is not None:
        return f"cron {row.cron} ({row.timezone or 'UTC'})"
    return None


def _payment(r: Any) -> tuple[Any, ...]:
    return (
        r.id,
        utc(r.created_at),
        utc(r.updated_at),
        r.state,
        r.payer,
        r.payee,
        decimal_string(int(r.amount), r.currency),
        r.currency,
        utc(r.due_at),
        _schedule(r),
        utc(r.next_due_at),
        r.catchup,
        r.memo,
    )


def _occurrence(r: Any) -> tuple[Any, ...]:
    # Unpacked once: a Row's attribute lookups were a third of the export's CPU (cProfile).
    (
        id_,
        key,
        payment_id,
        due_at,
        nominal_at,
        state,
        attempts,
        amount,
        currency,
        payer,
        payee,
        reference,
        reason,
        started_at,
        finished_at,
        created_at,
        updated_at,
    ) = r
    return (
        id_,
        key,
        payment_id,
        utc(due_at),
        utc(nominal_at),
        state,
        attempts,
        decimal_string(int(amount), currency),
        currency,
        payer,
        payee,
        reference,
        None if reason is None else redact(reason),
        utc(started_at),
        utc(finished_at),
        utc(created_at),
        utc(updated_at),
    )


def _ledger(r: Any) -> tuple[Any, ...]:
    return (
        r.id,
        utc(r.created_at),
        r.account,
        decimal_string(int(r.amount), r.currency),
        r.currency,
        "payment" if r.occurrence_key is not None else "deposit",
        r.transfer_id,
        r.payment_id,
        r.occurrence_key,
        r.counterparty,
    )


_VALUES: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "payments": _payment,
    "occurrences": _occurrence,
    "ledger": _ledger,
}


def values(kind: str, rows: list[Any]) -> list[tuple[Any, ...]]:
    """Store rows (Exports.export_page) as the values of COLUMNS[kind]."""
    shape = _VALUES[kind]
    return [shape(r) for r in rows]


# -- encoding ------------------------------------------------------------------------------------


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection: a memo
# "=HYPERLINK(...)" becomes a link, worse with DDE). Such a text cell gets a leading "'", which
# spreadsheets show as text; a number (a negative amount) is left as it is.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _inert(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


def encode(kind: str, fmt: str, rows: list[tuple[Any, ...]], header: bool) -> str:
    """One page as text: CSV (RFC 4180, CRLF; an empty field for no value) with the header
    first if `header`, or JSON Lines (one object per line, null for no value)."""
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out)
        if header:
            writer.writerow(COLUMNS[kind])
        writer.writerows(tuple(_inert(v) for v in row) for row in rows)
    else:
        names = COLUMNS[kind]
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        out.writelines(dumps(dict(zip(names, row, strict=True))) + "\n" for row in rows)
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    rows: int
    after: int | None  # the next page's `after`; None: this was the last page


def read_chunk(
    store: Any, request: ExportRequest, after: int = 0, page: int = EXPORT_PAGE
) -> Chunk:
    """One page read and encoded (the header comes with the first, after=0): synchronous, for
    the CLI's thread or the API's database threads."""
    rows = store.exports.export_page(request.kind, request.start, request.end, after, page)
    text = encode(request.kind, request.format, values(request.kind, rows), header=after == 0)
    last = int(rows[-1].id) if len(rows) == page else None
    return Chunk(text, len(rows), last)


def chunks(store: Any, request: ExportRequest, page: int = EXPORT_PAGE) -> Iterator[Chunk]:
    """Every page of the export, in order."""
    chunk = read_chunk(store, request, 0, page)
    yield chunk
    while chunk.after is not None:
        chunk = read_chunk(store, request, chunk.after, page)
        yield chunk


# -- statements ----------------------------------------------------------------------------------


def statement_view(data: StatementData, month: str) -> dict[str, Any]:
    """A statement as JSON: balances and amounts as decimal strings; each entry with the
    balance after it."""
    cur = data.currency
    balance = data.opening
    entries = []
    for e in data.entries:
        balance += e.amount
        entries.append(
            {
                "id": e.id,
                "at": utc(e.at),
                "amount": decimal_string(e.amount, cur),
                "kind": "deposit" if e.payment_id is None else "payment",
                "payment_id": e.payment_id,
                "occurrence_key": e.occurrence_key,
                "counterparty": e.counterparty,
                "balance": decimal_string(balance, cur),
            }
        )
    return {
        "account": data.account,
        "currency": cur,
        "month": month,
        "from": utc(_first(month)),
        "to": utc(_first(month, 1)),
        "opening_balance": decimal_string(data.opening, cur),
        "closing_balance": decimal_string(data.closing, cur),
        "total": decimal_string(data.closing - data.opening, cur),
        "entries": entries,
    }


def _first(month: str, later: int = 0) -> datetime:
    start, end = parse_month(month)
    return end if later else start


def statement_text(view: dict[str, Any]) -> str:
    """A statement for people, one line per entry."""
    lines = [
        f"statement of {view['account']} for {view['month']} ({view['currency']})",
        f"{'opening balance':<62}{view['opening_balance']:>16}",
    ]
    for e in view["entries"]:
        what = (
            "deposit"
            if e["payment_id"] is None
            else f"payment #{e['payment_id']} {'to' if e['amount'].startswith('-') else 'from'} "
            f"{e['counterparty']}"
        )
        lines.append(f"{e['at'][:19]}Z  {what:<30}{e['amount']:>10}{e['balance']:>16}")
    lines.append(f"{'closing balance':<62}{view['closing_balance']:>16}")
    return "\n".join(lines)
