"""The whole audit log (issue 22, item 2): GET /v1/actions and the dashboard's actions page
list every action a person took, those tied to no payment too, filtered by actor, action,
payment and time, paged; a bad filter is a 4xx naming its field. SQLite and PostgreSQL."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from paysched.actors import Actor
from paysched.db.actions import Acting, Subject, key_subject, record
from paysched.db.apikeys import ApiKeys
from tests.api.conftest import Api, problem
from tests.api.test_actions import key_ids
from tests.api.test_api import accounts
from tests.api.test_dashboard import page, schedule, signed

WEEKLY = {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"}


async def listed(api: Api, **params: Any) -> list[dict[str, Any]]:
    """Every page of GET /v1/actions with these filters, two at a time, followed to its end."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = params | {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = await api.get("/v1/actions", **query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= 2 and body["has_more"] == (body["next_cursor"] is not None)
        seen += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


async def history(api: Api) -> tuple[dict[str, int], int]:
    """Accounts made and funded, a payment made, paused and resumed over the API (the write
    key), the payment cancelled by the admin key, an API key made from Python."""
    ids = await key_ids(api)
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **WEEKLY)
    for action in ("pause", "resume"):
        assert (await api.post(f"/v1/payments/{pid}/{action}", None, "write")).is_success
    assert (await api.post(f"/v1/payments/{pid}/cancel", None, "admin")).is_success
    now = api.app.clock.now()
    acting = Acting(Actor.python(), "create_api_key", now, key_subject("read"))
    made, _ = await api.app.db(
        ApiKeys(api.app.store.engine).create, "ops-eve", "read", now, acting.then()
    )
    return ids | {"made": made.id}, pid


async def test_every_action_newest_first_with_those_of_no_payment(api: Api) -> None:
    ids, pid = await history(api)
    everything = await listed(api)
    assert [(a["action"], a["payment_id"]) for a in everything] == [
        ("create_api_key", None),
        ("cancel", pid),
        ("resume", pid),
        ("pause", pid),
        ("create", pid),
        ("create_account", None),
        ("deposit", None),
        ("create_account", None),
    ]
    ats = [datetime.fromisoformat(a["at"]) for a in everything]
    assert ats == sorted(ats, reverse=True)
    deposit = everything[6]
    assert deposit["actor"] == {"kind": "api_key", "api_key_id": ids["write"], "name": "test-write"}
    assert deposit["detail"] == {"account": "alice", "amount_minor": 1000, "currency": "USD"}
    assert (
        deposit["summary"]
        == f"deposited 10.00 USD into alice by key #{ids['write']} test-write via api"
    )
    assert everything[0]["actor"]["kind"] == "python"
    assert everything[0]["summary"].startswith(
        f"created an API key #{ids['made']} (read) by python"
    )
    assert everything[-1]["summary"].startswith("created an account alice by key #")


async def test_filters_by_actor_action_and_payment(api: Api) -> None:
    ids, pid = await history(api)

    async def actions(**params: Any) -> list[str]:
        return [a["action"] for a in await listed(api, **params)]

    assert await actions(actor=str(ids["admin"])) == ["cancel"]
    assert await actions(actor=f"#{ids['write']}") == [
        "resume",
        "pause",
        "create",
        "create_account",
        "deposit",
        "create_account",
    ]
    assert await actions(actor="python") == ["create_api_key"]
    assert await actions(actor="cli") == []
    assert await actions(action="deposit") == ["deposit"]
    assert await actions(action="pause", actor=str(ids["write"])) == ["pause"]
    assert await actions(action="pause", actor=str(ids["admin"])) == []
    assert await actions(payment_id=str(pid)) == ["cancel", "resume", "pause", "create"]
    assert await actions(payment_id=f"#{pid}", action="create") == ["create"]
    # An id no row can have names nothing (and never reaches SQL out of an integer's range).
    assert await actions(payment_id="99999999999") == []
    assert await actions(actor="99999999999") == []
    # What the read key may do: read.
    assert (await api.get("/v1/actions", "read")).status_code == 200


async def test_filters_by_time(api: Api) -> None:
    """`since` inclusive, `before` exclusive, by when each was done (times set here)."""
    actor = Actor.cli()

    def write() -> None:
        with api.app.store.engine.begin() as conn:
            for day in (1, 2, 3):
                at = datetime(2026, 12, day, 9, tzinfo=UTC)
                record(conn, actor, "create_account", at, Subject(detail={"account": f"a{day}"}))

    await api.app.db(write)

    async def days(**params: str) -> list[int]:
        return [datetime.fromisoformat(a["at"]).day for a in await listed(api, **params)]

    assert await days() == [3, 2, 1]
    assert await days(since="2026-12-02") == [3, 2]
    assert await days(since="2026-12-02T09:00:00Z") == [3, 2]
    assert await days(since="2026-12-02T10:00:00+01:00") == [3, 2]  # 09:00 UTC
    assert await days(since="2026-12-02T09:00:01Z") == [3]
    assert await days(before="2026-12-02T09:00:00Z") == [1]
    assert await days(since="2026-12-01T12:00:00Z", before="2026-12-03") == [2]


async def test_bad_filters_are_422_naming_the_field(api: Api) -> None:
    for params, field in [
        ({"actor": "alice"}, "actor"),
        ({"actor": "#0"}, "actor"),
        ({"action": "delete"}, "action"),
        ({"payment_id": "abc"}, "payment_id"),
        ({"payment_id": "0"}, "payment_id"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-12-01T09:00:00"}, "since"),  # no offset
        ({"before": "2026-13-01"}, "before"),
        ({"since": "2026-12-02", "before": "2026-12-01"}, "before"),
        ({"limit": "0"}, "limit"),
    ]:
        problem(await api.get("/v1/actions", **params), 422, "invalid_input", field)
    problem(await api.get("/v1/actions", cursor="nope"), 422, "invalid_cursor", "cursor")
    body = problem(await api.get("/v1/actions", action="delete"), 422, "invalid_input")
    assert "create_account" in body["detail"] and "revoke_api_key" in body["detail"]
    assert (await api.client.get("/v1/actions")).status_code == 401


async def test_the_openapi_document_reuses_the_action_model(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/actions"]["get"]
    assert op["operationId"] == "listActions"
    schemas = doc["components"]["schemas"]
    assert schemas["LoggedAction"]["properties"]["actor"] == {
        "$ref": "#/components/schemas/ActorOut"
    }
    assert "payment_id" in schemas["LoggedAction"]["properties"]
    assert {p["name"] for p in op["parameters"]} >= {
        "actor",
        "action",
        "payment_id",
        "since",
        "before",
        "limit",
        "cursor",
    }


# -- the dashboard's page -----------------------------------------------------------------------


async def test_the_dashboard_lists_every_action_with_links(api: Api) -> None:
    ids, pid = await history(api)
    text = await page(api, "/dashboard/actions")
    assert '<a href="/dashboard/actions">Actions</a>' in text  # in the header's nav
    rows = text.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
    assert len(rows) == 8
    assert f'<a href="/dashboard/payments/{pid}">payment #{pid}</a>' in rows[1]
    assert '<a href="/dashboard/accounts/alice">alice</a>' in rows[6]  # the deposit
    assert f"key #{ids['made']}" in rows[0]
    assert f'href="/dashboard/actions?actor={ids["admin"]}"' in rows[1]  # who: what else they did
    # The filters as GET /v1/actions takes them, kept in the form.
    text = await page(
        api, f"/dashboard/actions?actor=%23{ids['write']}&action=pause&payment_id=&since=&before="
    )
    rows = text.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
    assert len(rows) == 1 and "paused by key" in html.unescape(rows[0])
    assert f'name="actor" value="#{ids["write"]}"' in text
    assert '<option value="pause" selected>' in text


async def test_the_dashboard_pages_older_actions(api: Api) -> None:
    def write() -> None:
        with api.app.store.engine.begin() as conn:
            for n in range(30):
                at = datetime(2026, 12, 1, 9, n, tzinfo=UTC)
                record(
                    conn, Actor.cli(), "create_account", at, Subject(detail={"account": f"a{n}"})
                )

    await api.app.db(write)
    seen: list[str] = []
    path: str | None = "/dashboard/actions?action=create_account"
    while path is not None:
        text = await page(api, path)
        body = text.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
        seen += [part.split('"', 1)[0] for part in body.split('href="/dashboard/accounts/')[1:]]
        older = (
            text.split('rel="next"', 1)[0].rsplit('href="', 1)[-1] if 'rel="next"' in text else None
        )
        path = None if older is None else html.unescape(older.split('"', 1)[0])
        if path is not None:
            assert "action=create_account" in path and "cursor=" in path
            assert "« Newest" in (await page(api, path))
    assert seen == [f"a{n}" for n in reversed(range(30))]


async def test_a_bad_filter_is_a_page_naming_it(api: Api) -> None:
    r = await api.client.get(
        "/dashboard/actions?since=yesterday&actor=3", headers=signed(api, "read")
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert 'role="alert">since: expected ISO-8601' in r.text
    assert (
        'name="since" value="yesterday" placeholder="2026-12-01 or …T09:00:00Z" aria-invalid="true"'
        in r.text
    )
    assert 'name="actor" value="3"' in r.text  # the rest as typed
    r = await api.client.get("/dashboard/actions?cursor=nope", headers=signed(api, "read"))
    assert r.status_code == 422 and "cursor" in r.text
    r = await api.client.get("/dashboard/actions")
    assert r.status_code == 303 and r.headers["location"].endswith("/login")


async def test_a_payment_page_links_to_all_of_its_actions(api: Api) -> None:
    """Past its newest 20 actions, the payment's page sends the rest to the actions page."""
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **WEEKLY)
    for _ in range(10):
        for action in ("pause", "resume"):
            assert (await api.post(f"/v1/payments/{pid}/{action}", None, "write")).is_success
    link = f'<a href="/dashboard/actions?payment_id={pid}">'
    assert link in await page(api, f"/dashboard/payments/{pid}")
    text = await page(api, f"/dashboard/actions?payment_id={pid}")
    assert text.count(f'<a href="/dashboard/payments/{pid}">payment #{pid}</a>') == 21
