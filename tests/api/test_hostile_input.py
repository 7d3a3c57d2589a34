"""What a hostile client sends: tampered cursors and text no database should store. One rule
on SQLite and PostgreSQL, checked before SQL: a 422 naming the field, never a 5xx."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paysched.db.store import Claim
from paysched.domain import MAX_ID, OccurrenceState
from tests.api.conftest import Api, problem
from tests.integration.helpers import fund, pay

LISTS = ["/v1/payments", "/v1/notifications", "/v1/accounts", "/v1/occurrences"]
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    # The properties send hundreds of requests at once with one key.
    return env | {"PAYSCHED_API_RATE_LIMIT": "1000000"}


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def json_cursor(value: str) -> str:
    """A cursor holding this JSON text (any value a client may encode, made by hand)."""
    return cursor_of(value.encode("utf-8", "surrogatepass"))


TAMPERED = [
    json_cursor("2147483648"),  # one past PostgreSQL's ids
    json_cursor("9223372036854775807"),
    json_cursor('"\\u0000"'),  # NUL: PostgreSQL refuses it in text
    json_cursor('"\\ud800"'),  # a lone surrogate: no UTF-8 for it
    json_cursor('"a\\u0000b"'),
    json_cursor("[1, 2147483648]"),
    json_cursor("[999999999999999999, 1]"),  # a number where the due time goes
    json_cursor('["0001-01-01T00:00:00+14:00", 1]'),  # out of range in UTC
    json_cursor('["2026-01-01T09:00:00", 1]'),  # no offset
    json_cursor("[1e400, 1]"),
    json_cursor("true"),
    json_cursor("null"),
    cursor_of(b"\xff\xfe"),  # not UTF-8
    "@@@@",
]


@pytest.mark.parametrize("path", LISTS)
async def test_a_tampered_cursor_is_422_invalid_cursor(api: Api, path: str) -> None:
    """Finding 11: these reached the database (422 'out of range' or 500, with a traceback)."""
    for cursor in TAMPERED:
        r = await api.get(path, cursor=cursor)
        body = problem(r, 422, "invalid_cursor", "cursor")
        assert body["detail"] == "cursor: not a cursor from this API", (cursor, body)


async def test_the_cursors_of_this_api_walk_every_row_once(api: Api) -> None:
    """Page by page, one row each: every row once. Occurrences due at a time that is not a
    whole millisecond came back at the start of the next page: the cursor lost the rest."""
    await fund(api.app, {"alice": 10_000, "bob": 0, "carol": 0})
    for _ in range(3):  # due within the look-ahead: each has its occurrence at once
        await pay(api.app, "alice", "bob", 100, in_s=30.0004)
    for path, count in (("/v1/payments", 3), ("/v1/accounts", 3), ("/v1/occurrences", 3)):
        seen: list[Any] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
            r = await api.get(path, **params)
            assert r.status_code == 200, r.text
            seen += [row.get("id", row.get("name")) for row in r.json()["data"]]
            cursor = r.json()["next_cursor"]
            if cursor is None or len(seen) > count:
                break
        assert len(seen) == count == len(set(seen)), (path, seen)


def valid_position(path: str, value: Any) -> bool:
    """What each list's cursor holds: an id, an account name, or [due time, id]."""

    def is_id(v: Any) -> bool:
        return type(v) is int and 0 < v <= MAX_ID

    if path == "/v1/accounts":
        return isinstance(value, str) and value.isprintable() and value == value.strip()
    if path == "/v1/occurrences":
        return (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], str)
            and aware(value[0])
            and is_id(value[1])
        )
    return is_id(value)


def aware(text: str) -> bool:
    try:
        due = datetime.fromisoformat(text)
        return due.utcoffset() is not None and due.astimezone(UTC) is not None
    except (ValueError, OverflowError):
        return False


def decoded(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        return None


# What sits near a limit: ids past PostgreSQL's, NUL and lone surrogates (st.characters()
# draws neither often enough, or at all).
edge_ints = st.one_of(st.integers(), st.integers(MAX_ID - 2, 2**64), st.integers(-2, 2))
edge_text = st.text(st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff"])))
json_values = st.recursive(
    st.none() | st.booleans() | edge_ints | st.floats() | edge_text,
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)
cursors = st.one_of(
    st.binary(max_size=140).map(cursor_of),
    json_values.map(lambda v: cursor_of(json.dumps(v).encode())),
    st.text(st.characters(codec="utf-8"), max_size=200),
)


@given(cursor=cursors)
@PROPERTY
async def test_any_cursor_is_a_page_or_422_invalid_cursor(api: Api, cursor: str) -> None:
    """Cursors as arbitrary bytes, JSON values or text: a page when it is a position the
    list could have made, else 422 invalid_cursor; never a 5xx."""
    for path in LISTS:
        r = await api.get(path, cursor=cursor)
        if r.status_code == 200:
            assert valid_position(path, decoded(cursor)), (path, cursor)
        else:
            problem(r, 422, "invalid_cursor", "cursor")


BAD_TEXT = ["a\u0000b", "\u001b[31mred", "\u007f", "\u0085"]


@pytest.mark.parametrize("text", BAD_TEXT)
async def test_a_memo_that_no_database_stores_is_422_naming_memo(api: Api, text: str) -> None:
    """Finding 11: a memo with a NUL was refused by PostgreSQL with a traceback and stored
    by SQLite. Refused on both, before SQL, and nothing is created."""
    await fund(api.app, {"alice": 10_000, "bob": 0})
    body = {"from": "alice", "to": "bob", "amount": "1.00", "in": "1h", "memo": text}
    problem(await api.post("/v1/payments", body, "write"), 422, "invalid_input", "memo")
    assert (await api.get("/v1/payments")).json()["data"] == []


async def test_a_lone_surrogate_in_a_memo_is_422_naming_memo(api: Api) -> None:
    """JSON may escape a lone surrogate; no UTF-8 (PostgreSQL) encodes it: SQLite stored it
    and the answers that showed it failed."""
    await fund(api.app, {"alice": 10_000, "bob": 0})
    raw = b'{"from": "alice", "to": "bob", "amount": "1.00", "in": "1h", "memo": "x\\ud800"}'
    headers = api.auth("write") | {"Content-Type": "application/json"}
    r = await api.client.post("/v1/payments", content=raw, headers=headers)
    problem(r, 422, "invalid_input", "memo")
    assert (await api.get("/v1/payments")).json()["data"] == []


async def test_tabs_line_breaks_and_any_script_are_text(api: Api) -> None:
    await fund(api.app, {"alice": 10_000, "bob": 0})
    memo = "rent\tDecember\r\nzoé 家賃 😀"
    body = {"from": "alice", "to": "bob", "amount": "1.00", "in": "1h", "memo": memo}
    r = await api.post("/v1/payments", body, "write")
    assert r.status_code == 201 and r.json()["memo"] == memo, r.text


@pytest.mark.parametrize("name", ["al\u0000ice", "\ud800"])
async def test_an_account_name_no_account_can_have_is_422_naming_it(api: Api, name: str) -> None:
    """A payer no account can be named is refused naming `from`, never looked up in SQL."""
    await fund(api.app, {"alice": 10_000, "bob": 0})
    body = {"from": name, "to": "bob", "amount": "1.00", "currency": "USD", "in": "1h"}
    headers = api.auth("write") | {"Content-Type": "application/json"}
    r = await api.client.post("/v1/payments", content=json.dumps(body).encode(), headers=headers)
    problem(r, 422, "invalid_input", "from")


async def test_a_resolve_reason_with_a_nul_is_422_naming_reason(api: Api) -> None:
    await fund(api.app, {"alice": 10_000, "bob": 0})
    pid = await pay(api.app, "alice", "bob", 100, in_s=30)
    store, now = api.app.store, api.app.clock.now()
    [occ] = await api.app.db(store.reads.occurrences_of, pid)
    claim = await api.app.db(store.execution.claim, occ.id, now)
    assert isinstance(claim, Claim)
    assert await api.app.db(
        store.execution.finish, claim, OccurrenceState.NEEDS_REVIEW, now, "lost"
    )
    r = await api.post(
        f"/v1/occurrences/{occ.key}/resolve", {"outcome": "failed", "reason": "no\u0000pe"}
    )
    problem(r, 422, "invalid_input", "reason")
    assert (
        await api.app.db(store.reads.get_occurrence, occ.id)
    ).state == OccurrenceState.NEEDS_REVIEW
