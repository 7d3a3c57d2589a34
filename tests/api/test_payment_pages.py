"""A payment's detail costs the same however long its history (issue 20, item 3a): its newest
occurrences and a cursor, and GET /v1/payments/{id}/occurrences for the rest, on SQLite and
PostgreSQL; the dashboard's payment page pages the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, update

from paysched.db import tables as t
from paysched.domain import OccurrenceState
from paysched.reads import DETAIL_PAGE
from paysched.views import payment_status
from tests.api.conftest import Api, problem
from tests.api.test_dashboard import signed
from tests.api.test_hostile_input import TAMPERED, json_cursor
from tests.integration.helpers import fund, pay

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = (
    (None, "scheduled"),
    ("scheduled", "queued"),
    ("queued", "executing"),
    ("executing", "succeeded"),
)


async def with_history(api: Api, n: int, unfinished_at: int | None = None) -> int:
    """A done payment with `n` succeeded occurrences, four transitions each (the one at index
    `unfinished_at`, if any, is unknown). Due times repeat in threes and are not whole
    milliseconds: a page boundary between two occurrences due at one instant is kept apart by
    their ids, and a cursor in milliseconds would lose its place."""
    if not await api.app.db(api.app.store.accounts.list_accounts, 10):
        await fund(api.app, {"alice": 10_000, "bob": 0})
    pid = await pay(api.app, "alice", "bob", 100, in_s=3600)  # outside the look-ahead
    with api.app.store.engine.begin() as conn:
        conn.execute(update(t.payments).where(t.payments.c.id == pid).values(state="done"))
        if not n:
            return pid
        rows = [
            dict(
                payment_id=pid,
                key=f"h-{pid}-{i}",
                attempts=1,
                created_at=T0,
                updated_at=T0,
                due_at=T0 + timedelta(hours=i // 3, microseconds=123),
                state="unknown" if i == unfinished_at else "succeeded",
            )
            for i in range(n)
        ]
        ids = conn.execute(insert(t.occurrences).returning(t.occurrences.c.id), rows).scalars()
        conn.execute(
            insert(t.transitions),
            [
                dict(occurrence_id=o, at=T0, from_state=f, to_state=to, attempt=1)
                for o in ids.all()
                for f, to in STEPS
            ],
        )
    return pid


def newest_first(api: Api, pid: int) -> list[int]:
    with api.app.store.engine.connect() as conn:
        c = t.occurrences.c
        rows = conn.execute(
            t.occurrences.select().where(c.payment_id == pid).order_by(c.due_at.desc(), c.id.desc())
        )
        return [r.id for r in rows]


@contextmanager
def statements(api: Api) -> Iterator[list[tuple[str, int]]]:
    """Every SQL statement sent meanwhile, with how many parameters it bound."""
    sent: list[tuple[str, int]] = []

    def before(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, len(parameters or ())))

    engine = api.app.store.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def test_a_detail_costs_the_same_statements_however_long_the_history(api: Api) -> None:
    """The detail read every occurrence and every transition of the payment: 300 of them
    bound 300 ids in one IN list and answered ~240 KB. Now the same statements, the same
    parameters and one page for 30 occurrences as for 300."""
    assert (await api.get("/v1/accounts")).status_code == 200  # the key's first use noted
    cost: dict[int, list[tuple[str, int]]] = {}
    for n in (30, 300):
        pid = await with_history(api, n)
        with statements(api) as sent:
            r = await api.get(f"/v1/payments/{pid}")
        assert r.status_code == 200, r.text
        detail = r.json()
        # The newest page, in due order (as the detail always listed them).
        assert [o["id"] for o in detail["occurrences"]] == newest_first(api, pid)[:DETAIL_PAGE][
            ::-1
        ]
        assert all(len(o["history"]) == 4 for o in detail["occurrences"])
        assert detail["status"] == "succeeded" and detail["occurrences_next_cursor"]
        cost[n] = sent
    assert len(cost[30]) == len(cost[300]) <= 10, cost[300]
    assert [p for _, p in cost[30]] == [p for _, p in cost[300]], cost[300]


async def test_the_status_still_sees_occurrences_beyond_the_first_page(api: Api) -> None:
    """`status` says `pending` while ANY occurrence is not final, not just a shown one."""
    pid = await with_history(api, 50, unfinished_at=0)  # the oldest: not on the first page
    detail = (await api.get(f"/v1/payments/{pid}")).json()
    assert all(o["state"] == "succeeded" for o in detail["occurrences"])
    assert detail["status"] == "pending"
    states = [OccurrenceState(s) for s in ["unknown"] + ["succeeded"] * 49]
    payment = await api.app.db(api.app.store.payments.get_payment, pid)
    assert payment_status(payment, states) == "pending"  # what it said reading them all


async def test_the_cursor_walks_every_occurrence_exactly_once(api: Api) -> None:
    pid = await with_history(api, 300)
    detail = (await api.get(f"/v1/payments/{pid}")).json()
    seen = [o["id"] for o in reversed(detail["occurrences"])]
    # The link first, as a client following it would; then pages of another size.
    r = await api.client.get(detail["occurrences_next"], headers=api.auth("read"))
    pages = 1
    costs: set[int] = set()
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [o["id"] for o in body["data"]]
        assert all(len(o["history"]) == 4 and o["attempts"] for o in body["data"])
        pages += 1
        if body["next_cursor"] is None:
            assert not body["has_more"]
            break
        with statements(api) as sent:
            r = await api.get(
                f"/v1/payments/{pid}/occurrences", limit=70, cursor=body["next_cursor"]
            )
        costs.add(len(sent))
        assert pages < 20, "the cursor does not advance"
    assert seen == newest_first(api, pid)  # each once, newest first (ties by id)
    assert len(costs) == 1, costs  # every page the same statements, however deep


async def test_a_page_of_a_short_history_has_no_cursor(api: Api) -> None:
    pid = await with_history(api, DETAIL_PAGE)
    detail = (await api.get(f"/v1/payments/{pid}")).json()
    assert len(detail["occurrences"]) == DETAIL_PAGE
    assert detail["occurrences_next_cursor"] is None and detail["occurrences_next"] is None
    # Up to a page, the detail lists every occurrence in due order, as it did before pages.
    assert [o["id"] for o in detail["occurrences"]] == newest_first(api, pid)[::-1]
    pid = await with_history(api, 0)
    detail = (await api.get(f"/v1/payments/{pid}")).json()
    assert detail["occurrences"] == [] and detail["status"] == "scheduled"
    page = (await api.get(f"/v1/payments/{pid}/occurrences")).json()
    assert page == {"data": [], "has_more": False, "next_cursor": None}


async def test_bad_pages_are_problems_naming_the_field(api: Api) -> None:
    pid = await with_history(api, 3)
    path = f"/v1/payments/{pid}/occurrences"
    for cursor in [*TAMPERED, json_cursor(f"{pid}"), json_cursor('["2026-01-01T00:00Z"]')]:
        problem(await api.get(path, cursor=cursor), 422, "invalid_cursor", "cursor")
    # A position in milliseconds (the old format) is refused, not read as another.
    problem(
        await api.get(path, cursor=json_cursor("[1767225600000, 1]")),
        422,
        "invalid_cursor",
        "cursor",
    )
    for limit in (0, 1001, "x", -1):
        problem(await api.get(path, limit=limit), 422, "invalid_input", "limit")
    problem(await api.get("/v1/payments/999999/occurrences"), 404, "not_found")
    problem(await api.get("/v1/payments/x/occurrences"), 422, "invalid_input", "payment_id")


async def test_the_openapi_document_describes_the_paging(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    listing = doc["paths"]["/v1/payments/{payment_id}/occurrences"]["get"]
    assert listing["operationId"] == "listPaymentOccurrences"
    assert {p["name"] for p in listing["parameters"]} >= {"payment_id", "limit", "cursor"}
    detail = doc["components"]["schemas"]["PaymentDetail"]["properties"]
    assert {"occurrences_next_cursor", "occurrences_next"} <= detail.keys()
    links = doc["paths"]["/v1/payments/{payment_id}"]["get"]["responses"]["200"]["links"]
    assert links["olderOccurrences"]["operationId"] == "listPaymentOccurrences"


async def test_the_dashboard_pages_a_payment_s_occurrences(api: Api) -> None:
    pid = await with_history(api, 45)
    order = newest_first(api, pid)
    path = f"/dashboard/payments/{pid}"
    shown: list[str] = []
    for _ in range(5):
        r = await api.client.get(path, headers=signed(api, "read"))
        assert r.status_code == 200, r.text
        keys = [part.split("<", 1)[0] for part in r.text.split("<summary><code>")[1:]]
        shown += keys
        if "Older →" not in r.text:
            break
        path = r.text.split("Older →", 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]
        path = path.replace("&amp;", "&")
    with api.app.store.engine.connect() as conn:
        rows = conn.execute(t.occurrences.select().where(t.occurrences.c.payment_id == pid))
        key_of = {r.id: r.key for r in rows}
    assert shown == [key_of[i] for i in order]
    bad = await api.client.get(
        f"/dashboard/payments/{pid}", params={"cursor": "@@@@"}, headers=signed(api, "read")
    )
    assert bad.status_code == 422 and "cursor" in bad.text
    assert bad.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("n", [1, 3])
async def test_an_unpaged_detail_is_what_paysched_show_prints(api: Api, n: int) -> None:
    """`paysched show` still reads them all, oldest first (it has no cursor to page with)."""
    from paysched.reads import payment_detail

    pid = await with_history(api, n)
    view = await api.app.read(payment_detail, pid)
    assert [o["id"] for o in view["occurrences"]] == newest_first(api, pid)[::-1]
    assert "occurrences_next_cursor" not in view and view["status"] == "succeeded"
