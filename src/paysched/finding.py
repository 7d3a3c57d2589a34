"""The payment search and filters as GET /v1/payments and the dashboard's list take them:
text in, a checked PaymentFilter out (InvalidInput naming the field). Both then read with
reads.find_payments (db/store/finds.py has the queries)."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Any

from paysched.db.store.finds import STATUSES, PaymentFilter
from paysched.domain import (
    OccurrenceState,
    normalise_name,
    parse_currency,
    payment_state_filter,
)
from paysched.errors import InvalidInput
from paysched.schedules import check_instant, parse_instant

MAX_Q = 200
_ID = re.compile(r"\A#?([0-9]{1,12})\Z")
OCCURRENCE_STATES = tuple(s.value for s in OccurrenceState)


def _search(q: str | None) -> dict[str, Any]:
    if q is None:
        return {}
    text = unicodedata.normalize("NFC", q).strip()  # as account names are stored
    if not text:
        return {}
    if len(text) > MAX_Q:
        raise InvalidInput("q", f"at most {MAX_Q} characters, got {len(text)}")
    if not text.isprintable():
        raise InvalidInput("q", "must be printable text without control characters")
    by_id = _ID.match(text)
    if by_id is not None:
        if int(by_id.group(1)) == 0:
            raise InvalidInput("q", "a payment id is a positive integer, got 0")
        return {"payment_id": int(by_id.group(1))}
    return {"text": text}


def _one_of(value: str | None, field: str, allowed: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise InvalidInput(field, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _due(value: str | None, field: str) -> datetime | None:
    """A day (its midnight UTC, as a date field sends it) or an instant with its offset."""
    if value is None or not value.strip():
        return None
    raw = value.strip()
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(field, f"not a date: {value!r}") from None
        return check_instant(datetime(day.year, day.month, day.day, tzinfo=UTC), field, raw)
    return parse_instant(raw, field)


def _name(value: str | None, field: str) -> str | None:
    return None if value is None or not value.strip() else normalise_name(value, field)


def payment_filter(
    *,
    q: str | None = None,
    state: str | None = None,
    status: str | None = None,
    occurrence: str | None = None,
    account: str | None = None,
    payer: str | None = None,
    payee: str | None = None,
    currency: str | None = None,
    due_from: str | None = None,
    due_before: str | None = None,
    payer_field: str = "from",
    payee_field: str = "to",
) -> PaymentFilter:
    """The filters as typed (an empty one is no filter: a form sends every field); each
    bad one is InvalidInput naming its field."""
    start, end = _due(due_from, "due_from"), _due(due_before, "due_before")
    if start is not None and end is not None and end <= start:
        raise InvalidInput("due_before", "must be later than due_from")
    return PaymentFilter(
        **_search(q),
        state=payment_state_filter(state or None),
        status=_one_of(status, "status", STATUSES),
        occurrence=_one_of(occurrence, "occurrence", OCCURRENCE_STATES),
        account=_name(account, "account"),
        payer=_name(payer, payer_field),
        payee=_name(payee, payee_field),
        currency=parse_currency(currency) if currency and currency.strip() else None,
        due_from=start,
        due_before=end,
    )
