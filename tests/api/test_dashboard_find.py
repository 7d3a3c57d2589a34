"""Finding any payment (issue 22, item 1): the dashboard's payment list (search, filters,
paging that keeps them), its account page and the overview's counts as links, and the same
search and filters on GET /v1/payments, on SQLite and PostgreSQL (real App, real Redis)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from paysched.db import tables as t
from paysched.db.store import finds
from paysched.web.auth import COOKIE
from tests.api.conftest import Api, problem
from tests.api.test_dashboard import page, signed
from tests.integration.helpers import fund

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BULK = 30  # plain payments alice -> bob, older than the others: more than a page (25)


@dataclass
class World:
    ids: dict[str, int]  # name -> payment id
    bulk: list[int]  # newest first

    def __getitem__(self, name: str) -> int:
        return self.ids[name]


def _payment(
    conn: Any,
    accounts: dict[str, int],
    payer: str,
    payee: str,
    currency: str,
    state: str,
    memo: str = "",
) -> int:
    pid: int = conn.execute(
        insert(t.payments).returning(t.payments.c.id),
        dict(
            payer_id=accounts[payer],
            payee_id=accounts[payee],
            amount=250,
            currency=currency,
            state=state,
            due_at=T0,
            memo=memo,
            created_at=T0,
            updated_at=T0,
        ),
    ).scalar_one()
    return pid


def _occurrence(
    conn: Any, pid: int, key: str, due: datetime, state: str, reference: str | None = None
) -> None:
    conn.execute(
        insert(t.occurrences),
        dict(
            payment_id=pid,
            key=key,
            due_at=due,
            state=state,
            reference=reference,
            created_at=T0,
            updated_at=T0,
        ),
    )


@pytest.fixture
async def world(api: Api) -> World:
    """Payments of every status, written as rows (no worker runs): each search and filter
    below knows exactly which of them it must find."""
    await fund(api.app, {"alice": 10_000, "bob": 0})
    await fund(api.app, {"carol": 500, "dave": 0}, currency="EUR")
    with api.app.store.engine.begin() as conn:
        accounts = {r.name: r.id for r in conn.execute(select(t.accounts.c.name, t.accounts.c.id))}
        bulk = []
        for i in range(BULK):
            pid = _payment(conn, accounts, "alice", "bob", "USD", "done", f"bulk {i}")
            _occurrence(conn, pid, f"bulk-{i}", T0 + timedelta(days=i % 3), "succeeded")
            bulk.append(pid)
        ids: dict[str, int] = {}
        ids["rent"] = _payment(conn, accounts, "alice", "bob", "USD", "done", "Rent for March")
        _occurrence(
            conn,
            ids["rent"],
            "pay-rent-1",
            datetime(2026, 3, 5, tzinfo=UTC),
            "succeeded",
            "ref-AAA",
        )
        ids["failed"] = _payment(conn, accounts, "alice", "bob", "USD", "done", "utilities")
        _occurrence(conn, ids["failed"], "pay-failed-1", datetime(2026, 4, 5, tzinfo=UTC), "failed")
        ids["scheduled"] = _payment(conn, accounts, "carol", "dave", "EUR", "active")
        ids["paused"] = _payment(conn, accounts, "bob", "alice", "USD", "paused")
        ids["cancelled"] = _payment(conn, accounts, "carol", "dave", "EUR", "cancelled")
        ids["unknown"] = _payment(
            conn, accounts, "dave", "carol", "EUR", "done", "<script>alert(1)</script> 100%_off"
        )
        _occurrence(
            conn,
            ids["unknown"],
            "pay-unknown-1",
            datetime(2026, 4, 10, tzinfo=UTC),
            "unknown",
            "ref-BBB",
        )
        ids["review"] = _payment(conn, accounts, "alice", "bob", "USD", "done")
        _occurrence(
            conn, ids["review"], "pay-review-1", datetime(2026, 4, 11, tzinfo=UTC), "needs_review"
        )
    return World(ids, list(reversed(bulk)))


def found_ids(text: str) -> list[int]:
    """The payments the list page shows, in order."""
    section = text.split('id="found"', 1)[1].split("</section>", 1)[0]
    return [int(n) for n in re.findall(r'<a href="/dashboard/payments/(\d+)">', section)]


async def both(api: Api, **params: str) -> list[int]:
    """The dashboard's list and GET /v1/payments, asked the same: the same payments."""
    r = await api.client.get("/dashboard/payments", params=params, headers=signed(api, "read"))
    assert r.status_code == 200, r.text
    shown = found_ids(r.text)
    answer = await api.get("/v1/payments", limit=100, **params)
    assert answer.status_code == 200, answer.text
    every: list[int] = [p["id"] for p in answer.json()["data"]]
    assert shown == every[:25]  # the dashboard's page
    return every


async def test_each_kind_of_search(api: Api, world: World) -> None:
    rent = world["rent"]
    assert await both(api, q=str(rent)) == [rent]
    assert await both(api, q=f"#{rent}") == [rent]
    assert await both(api, q=" #999999 ") == []
    assert await both(api, q="pay-rent-1") == [rent]  # an occurrence key
    assert await both(api, q="ref-BBB") == [world["unknown"]]  # a provider's reference
    carol = [world["unknown"], world["cancelled"], world["scheduled"]]
    assert await both(api, q="carol") == carol  # an account, as payer or payee
    assert await both(api, q="rent FOR") == [rent]  # memo text, any case
    # LIKE's own wildcards are text: '%' and '_' match themselves only.
    assert await both(api, q="100%_off") == [world["unknown"]]
    assert await both(api, q="%") == [world["unknown"]]
    assert await both(api, q="nothing like it") == []
    text = await page(api, "/dashboard/payments?q=pay-rent-1")
    assert "“pay-rent-1” was taken as an occurrence key" in text
    text = await page(api, "/dashboard/payments?q=nothing+like+it")
    assert "No payment matches." in text


async def test_each_filter(api: Api, world: World) -> None:
    w = world
    assert await both(api, status="scheduled") == [w["scheduled"]]
    assert await both(api, status="paused") == [w["paused"]]
    assert await both(api, status="cancelled") == [w["cancelled"]]
    assert await both(api, status="failed") == [w["failed"]]
    assert await both(api, status="pending") == [w["review"], w["unknown"]]
    assert await both(api, status="succeeded") == [w["rent"], *w.bulk]
    assert await both(api, status="missed") == []
    assert await both(api, state="active") == [w["scheduled"]]
    assert await both(api, state="done") == [
        w["review"],
        w["unknown"],
        w["failed"],
        w["rent"],
        *w.bulk,
    ]
    assert await both(api, occurrence="needs_review") == [w["review"]]
    assert await both(api, occurrence="unknown") == [w["unknown"]]
    assert await both(api, occurrence="failed") == [w["failed"]]
    assert await both(api, account="dave") == [w["unknown"], w["cancelled"], w["scheduled"]]
    assert await both(api, account="nobody") == []
    assert await both(api, currency="eur") == [w["unknown"], w["cancelled"], w["scheduled"]]
    april = [w["review"], w["unknown"], w["failed"]]
    assert await both(api, due_from="2026-04-01") == april
    assert await both(api, due_from="2026-04-01", due_before="2026-04-10") == [w["failed"]]
    first_day = [pid for i, pid in enumerate(reversed(w.bulk)) if i % 3 == 0][::-1]
    assert await both(api, due_before="2026-01-02T00:00:00Z") == first_day
    # Every filter given must hold; a form's empty fields are no filter.
    assert await both(api, account="alice", status="pending", currency="USD") == [w["review"]]
    assert await both(api, q="bob", state="paused", status="", due_from="") == [w["paused"]]
    assert await both(api, q="carol", account="alice") == []


async def test_pages_keep_the_filters_both_ways(api: Api, world: World) -> None:
    """Older and newer links walk every match once, in order, with the filters kept."""
    expected = [world["review"], world["failed"], world["rent"], *world.bulk]
    path: str | None = "/dashboard/payments?account=alice&currency=USD&state=done"
    pages: list[list[int]] = []
    visited: list[str] = []
    while path is not None:
        visited.append(path)
        text = await page(api, path)
        pages.append(found_ids(text))
        older = re.search(r'<a href="([^"]+)" rel="next">', text)
        path = html.unescape(older.group(1)) if older else None
        if path is not None:
            assert "account=alice" in path and "currency=USD" in path and "state=done" in path
    assert [pid for shown in pages for pid in shown] == expected
    assert [len(shown) for shown in pages] == [25, 8]
    # Back from the last page: its newer link shows the page before it again.
    text = await page(api, visited[1])
    newer = re.search(r'<a href="([^"]+)" rel="prev">', text)
    assert newer is not None and "account=alice" in newer.group(1)
    assert found_ids(await page(api, html.unescape(newer.group(1)))) == pages[0]
    # The first page has no newer link; GET /v1/payments pages by its cursor the same way.
    assert 'rel="prev"' not in await page(api, "/dashboard/payments?account=alice")
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"account": "alice", "state": "done", "limit": 7}
        r = await api.get("/v1/payments", **params, **({"cursor": cursor} if cursor else {}))
        body = r.json()
        seen += [p["id"] for p in body["data"]]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    assert seen == expected


async def test_a_filter_no_index_answers_goes_a_stretch_at_a_time(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memo text (and status, a final occurrence state, a due range) is checked on a stretch
    of payment ids per page: a page may be empty, and says so, yet its link goes on."""
    monkeypatch.setattr(finds, "STRETCH", 4)
    path: str | None = "/dashboard/payments?q=bulk+1"  # bulk 1, bulk 10..19: the oldest
    found: list[int] = []
    empty = 0
    while path is not None:
        text = await page(api, path)
        found += found_ids(text)
        empty += "No payment matches among these" in text
        older = re.search(r'<a href="([^"]+)" rel="next">', text)
        last, path = path, html.unescape(older.group(1)) if older else None
    bulk = world.bulk[::-1]  # oldest first
    assert found == sorted([bulk[1], *bulk[10:20]], reverse=True)
    assert empty >= 2
    # Back up from the last page by the newer links: the same payments, none twice.
    back: list[int] = []
    newer: str | None = last
    while newer is not None:
        text = await page(api, newer)
        back += found_ids(text)
        link = re.search(r'<a href="([^"]+)" rel="prev">', text)
        newer = html.unescape(link.group(1)) if link else None
        assert newer is None or "q=bulk+1" in newer
    assert sorted(back, reverse=True) == found and len(set(back)) == len(back)


async def test_bad_input_is_a_400_page_naming_the_field(api: Api, world: World) -> None:
    bad = {
        "status": "late",
        "state": "failed",
        "occurrence": "lost",
        "currency": "XXZ",
        "account": "a\x07b",
        "due_from": "yesterday",
        "due_before": "2026-02-30",
        "q": "x" * 201,
        "before": "-1",
        "after": "abc",
    }
    for field, value in bad.items():
        r = await api.client.get(
            "/dashboard/payments", params={field: value}, headers=signed(api, "read")
        )
        assert r.status_code == 400, (field, r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/html")
        assert f"{field}: " in r.text, (field, r.text)
        # The form shows what was typed, escaped.
        assert 'role="search"' in r.text
    r = await api.client.get(
        "/dashboard/payments",
        params={"due_from": "2026-05-01", "due_before": "2026-04-01"},
        headers=signed(api, "read"),
    )
    assert r.status_code == 400 and "due_before: " in r.text
    # The API: 422 naming the field, as every bad input of it.
    for field, value in bad.items():
        if field in ("before", "after", "q"):
            continue
        problem(await api.get("/v1/payments", **{field: value}), 422, "invalid_input", field)
    r = await api.client.get(
        "/dashboard/accounts/alice", params={"before": "x"}, headers=signed(api, "read")
    )
    assert r.status_code == 400 and "before" in r.text


async def test_the_account_page(api: Api, world: World) -> None:
    for _ in range(30):  # more ledger entries than a page
        await api.app.db(api.app.store.accounts.deposit, "carol", 1, api.app.clock.now())
    text = await page(api, "/dashboard/accounts/carol")
    assert "Account carol" in text and "5.30 EUR" in text
    assert found_ids('id="found"' + text.split("<h2>Payments</h2>", 1)[1]) == [
        world["unknown"],
        world["cancelled"],
        world["scheduled"],
    ]
    assert 'href="/dashboard/payments?account=carol"' in text
    ledger = text.split("<h2>Ledger</h2>", 1)[1]
    first = re.findall(r"<tr><td>(\d+)</td>", ledger)
    assert len(first) == 25
    older = re.search(r'href="(/dashboard/accounts/carol\?before=\d+)" rel="next"', ledger)
    assert older is not None
    rest = re.findall(
        r"<tr><td>(\d+)</td>", (await page(api, older.group(1))).split("<h2>Ledger</h2>", 1)[1]
    )
    everything = [int(n) for n in first + rest]
    assert len(everything) == 31 and everything == sorted(everything, reverse=True)
    # Payments link their accounts; an unknown account is a 404 page.
    assert '<a href="/dashboard/accounts/carol">carol</a>' in await page(
        api, f"/dashboard/payments/{world['scheduled']}"
    )
    r = await api.client.get("/dashboard/accounts/nobody", headers=signed(api, "read"))
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")


async def test_the_overview_counts_link_into_the_list(api: Api, world: World) -> None:
    text = await page(api, "/dashboard/")
    card = text.split("<h2>Occurrences</h2>", 1)[1].split("</section>", 1)[0]
    link = re.search(
        r'<a href="(/dashboard/payments\?occurrence=needs_review)"[^>]*>(\d+)</a>', card
    )
    assert link is not None and link.group(2) == "1"
    assert found_ids(await page(api, link.group(1))) == [world["review"]]
    assert 'href="/dashboard/payments"' in text
    # A filter given to the overview is the list's.
    r = await api.client.get("/dashboard/?state=paused&q=bob", headers=signed(api, "read"))
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/payments?state=paused&q=bob"


async def test_everything_is_escaped_and_a_read_key_sees_it_all(api: Api, world: World) -> None:
    for path in (
        "/dashboard/payments?q=%3Cscript%3E",
        "/dashboard/payments",
        "/dashboard/accounts/dave",
        f"/dashboard/payments/{world['unknown']}",
    ):
        text = await page(api, path, "read")
        assert "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
    # What was typed comes back escaped too.
    r = await api.client.get(
        "/dashboard/payments", params={"q": '"><b>x', "status": "<i>"}, headers=signed(api, "read")
    )
    assert r.status_code == 400 and "<b>x" not in r.text and "<i>" not in r.text


async def test_the_openapi_document_has_the_new_parameters(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    params = {p["name"] for p in spec["paths"]["/v1/payments"]["get"]["parameters"]}
    assert {"q", "status", "occurrence", "account", "due_from", "due_before"} <= params


async def test_the_new_pages_need_a_signed_in_key(api: Api, world: World) -> None:
    for path in ("/dashboard/payments?q=carol", "/dashboard/accounts/carol"):
        r = await api.client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login", path
        r = await api.client.get(path, headers={"Cookie": f"{COOKIE}=psk_forged"})
        assert r.status_code == 303, path
