"""The operator dashboard at /dashboard over a real App (SQLite and PostgreSQL, real Redis):
signing in with an API key, pages, actions by scope, CSRF, escaping, live events."""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib.resources
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import event

from paysched.api.server import listen, serve
from paysched.app import App
from paysched.db.apikeys import ApiKeys
from paysched.db.sessions import DashboardSessions
from paysched.db.store import Claim
from paysched.domain import Occurrence, OccurrenceState
from paysched.web.auth import COOKIE
from tests.api.conftest import Api
from tests.api.test_api import accounts
from tests.conftest import wait_for
from tests.integration.helpers import all_final, running

HX = {"HX-Request": "true"}


def sessions(app: App) -> DashboardSessions:
    settings = app.settings
    return DashboardSessions(app.store.engine, settings.dashboard_idle, settings.dashboard_lifetime)


def signed(api: Api, scope: str) -> dict[str, str]:
    """What the browser sends once signed in with the `scope` key: a new session's cookie."""
    engine = api.app.store.engine
    key = ApiKeys(engine).verify(api.keys[scope])
    assert key is not None
    return {"Cookie": f"{COOKIE}={sessions(api.app).create(key.id, api.app.clock.now())}"}


async def page(api: Api, path: str, scope: str = "read") -> str:
    r = await api.client.get(path, headers=signed(api, scope))
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def count(text: str, section: str, name: str) -> int:
    """A number of the overview: `name` in its `section` card (Queue, Occurrences, ...)."""
    card = text.split(f"<h2>{section}</h2>", 1)[1].split("</section>", 1)[0]
    # The occurrence counts are links into the payment list (test_dashboard_find.py).
    found = re.search(rf"<dt>{name}</dt><dd>(?:<a [^>]*>)?(\d+)(?:</a>)?</dd>", card)
    assert found, (section, name, card)
    return int(found.group(1))


async def schedule(api: Api, **body: str) -> int:
    r = await api.post(
        "/v1/payments", {"from": "alice", "to": "bob", "amount": "2.50"} | body, "write"
    )
    assert r.status_code == 201, r.text
    pid: int = r.json()["id"]
    return pid


# -- signing in --------------------------------------------------------------------------------


async def test_login_sets_a_strict_http_only_cookie_for_the_dashboard_only(api: Api) -> None:
    form = {"key": api.keys["read"]}
    r = await api.client.post("/dashboard/login", data=form, headers={"Origin": "http://api"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/"
    cookie = r.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    # The cookie holds a random token, not the key (nor any part of it).
    token = cookie.split(";", 1)[0].removeprefix(f"{COOKIE}=")
    key = api.keys["read"]
    secret = key.split("_", 2)[-1]  # psk_PREFIX_SECRET: the secret may hold "_" itself
    assert len(secret) >= 32 and len(token) >= 43 and token not in key and secret not in cookie
    assert "max-age" not in attributes and "expires" not in attributes  # the browser's session
    assert {"httponly", "path", "samesite"} <= attributes and "secure" not in attributes
    assert "Path=/dashboard" in cookie and "samesite=strict" in cookie.lower()
    # Over https the cookie is also Secure.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.api), base_url="https://api"
    ) as tls:
        r = await tls.post("/dashboard/login", data=form, headers={"Origin": "https://api"})
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
    # The cookie opens the pages (the client kept it, as a browser does).
    assert (await api.client.get("/dashboard/")).status_code == 200
    out = await api.client.get("/dashboard/logout")
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    assert out.headers["set-cookie"].startswith(f'{COOKIE}="";')
    assert (await api.client.get("/dashboard/")).status_code == 303


async def test_a_wrong_or_revoked_key_or_a_cross_site_form_signs_nobody_in(api: Api) -> None:
    origin = {"Origin": "http://api"}
    wrong = await api.client.post("/dashboard/login", data={"key": "psk_0000_nope"}, headers=origin)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert "unknown or revoked" in wrong.text and "psk_0000_nope" not in wrong.text
    keys = ApiKeys(api.app.store.engine)
    row, key = await api.app.db(keys.create, "gone", "admin", api.app.clock.now())
    await api.app.db(keys.revoke, row.id, api.app.clock.now())
    revoked = await api.client.post("/dashboard/login", data={"key": key}, headers=origin)
    assert revoked.status_code == 401 and "set-cookie" not in revoked.headers
    # A form posted from another site (or with no Origin at all) is refused before the key.
    for headers in ({"Origin": "http://evil.example"}, {}):
        r = await api.client.post(
            "/dashboard/login", data={"key": api.keys["read"]}, headers=headers
        )
        assert r.status_code == 403 and "set-cookie" not in r.headers


async def test_pages_without_a_valid_cookie_lead_to_the_login_page(api: Api) -> None:
    for path in ("/dashboard/", "/dashboard/payments/1"):
        r = await api.client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    stale = await api.client.get("/dashboard/", headers={"Cookie": f"{COOKIE}=psk_00_xxxxxxxxxx"})
    assert stale.status_code == 303 and stale.headers["set-cookie"].startswith(f'{COOKIE}="";')
    htmx = await api.client.get("/dashboard/", headers=HX)
    assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/dashboard/login"
    assert (await api.client.get("/dashboard/events")).status_code == 401
    login = await api.client.get("/dashboard/login")
    assert login.status_code == 200 and 'name="key"' in login.text
    # /dashboard itself leads to the overview.
    assert (await api.client.get("/dashboard")).headers["location"].endswith("/dashboard/")


# -- actions by scope, CSRF ---------------------------------------------------------------------


async def test_a_read_key_cannot_cancel_a_write_key_can(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **{"in": "1h"})
    cancel = f"/dashboard/payments/{pid}/cancel"
    denied = await api.client.post(cancel, headers=signed(api, "read") | HX)
    assert denied.status_code == 403 and "scope 'write'" in html.unescape(denied.text)
    assert "Signed in with a read key" in await page(api, f"/dashboard/payments/{pid}")
    done = await api.client.post(cancel, headers=signed(api, "write") | HX)
    assert done.status_code == 200 and f"Payment #{pid} cancelled" in done.text
    assert done.headers["hx-trigger"] == "payment-changed"
    assert (await api.get(f"/v1/payments/{pid}")).json()["status"] == "cancelled"
    # A refusal is its message with its status, not a 500.
    again = await api.client.post(cancel, headers=signed(api, "write") | HX)
    assert again.status_code == 409 and "already cancelled" in again.text
    assert again.headers["hx-trigger"] == "payment-changed"  # the page was out of date
    detail = await page(api, f"/dashboard/payments/{pid}", "write")
    assert "s-cancelled" in detail and "hx-post" not in detail  # nothing left to do


async def test_pause_and_resume_from_the_dashboard(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, cron="0 9 * * 1")
    base = f"/dashboard/payments/{pid}"
    assert f'hx-post="{base}/pause"' in await page(api, base, "write")
    paused = await api.client.post(f"{base}/pause", headers=signed(api, "write") | HX)
    assert paused.status_code == 200 and "paused" in paused.text
    assert f'hx-post="{base}/resume"' in await page(api, base, "write")
    twice = await api.client.post(f"{base}/pause", headers=signed(api, "write") | HX)
    assert twice.status_code == 409
    resumed = await api.client.post(f"{base}/resume", headers=signed(api, "admin") | HX)
    assert resumed.status_code == 200 and "resumed" in resumed.text
    assert (await api.get(f"/v1/payments/{pid}")).json()["state"] == "active"


async def test_an_action_without_hx_request_or_a_matching_origin_is_refused(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **{"in": "1h"})
    cancel = f"/dashboard/payments/{pid}/cancel"
    # A foreign Origin is refused even beside HX-Request (which a header alone cannot vouch for).
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://api.evil.example"},
        {"Origin": "http://api:8080"},
    ]
    for extra in [{}, *foreign, *(o | HX for o in foreign)]:
        r = await api.client.post(cancel, headers=signed(api, "admin") | extra)
        assert r.status_code == 403 and "not sent from the dashboard" in r.text
    assert (await api.get(f"/v1/payments/{pid}")).json()["status"] != "cancelled"
    # A plain form post from the dashboard's own page (no JavaScript) works, as a full page.
    r = await api.client.post(cancel, headers=signed(api, "admin") | {"Origin": "http://api"})
    assert r.status_code == 200 and "<html" in r.text and f"Payment #{pid} cancelled" in r.text


# -- what it shows -----------------------------------------------------------------------------


async def test_the_overview_and_the_detail_show_a_payment_that_ran(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    pid = await schedule(api, **{"in": "200ms"}, memo="rent")
    async with running(api.app):
        [occ] = await all_final(api.app, [pid])
    assert occ.state == OccurrenceState.SUCCEEDED
    text = await page(api, "/dashboard/")
    stats = (await api.get("/v1/stats")).json()
    for section, part in (
        ("Queue", "queue"),
        ("Occurrences", "occurrences"),
        ("Notifications", "notifications"),
    ):
        for name, n in stats[part].items():
            assert count(text, section, name.replace("_", " ")) == n, (section, name)
    assert count(text, "Queue", "completed") == 1 and count(text, "Occurrences", "succeeded") == 1
    assert f'href="/dashboard/payments/{pid}"' in text and "2.50 USD" in text
    assert (
        '<a href="/dashboard/accounts/alice">alice</a> → <a href="/dashboard/accounts/bob">bob</a>'
    ) in text  # each its account's page
    assert "Nothing: no occurrence in needs_review" in text
    r = await api.client.get("/dashboard/", headers=signed(api, "read"))
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
    detail = await page(api, f"/dashboard/payments/{pid}")
    assert occ.key in detail and "s-succeeded" in detail and "rent" in detail
    attempts = detail.split("<h3>Attempts</h3>", 1)[1].split("</table>", 1)[0]
    assert re.search(r"<td>1</td>.*s-succeeded", attempts, re.S), attempts
    assert "<h3>History</h3>" in detail and "executing" in detail


async def needing_review(api: Api) -> tuple[int, Occurrence]:
    """A payment whose one occurrence was claimed and parked in needs_review, with a reason."""
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **{"in": "30s"})
    store, now = api.app.store, api.app.clock.now()
    [occ] = await api.app.db(store.reads.occurrences_of, pid)
    claim = await api.app.db(store.execution.claim, occ.id, now)
    assert isinstance(claim, Claim)
    assert await api.app.db(
        store.execution.finish,
        claim,
        OccurrenceState.NEEDS_REVIEW,
        now,
        "the provider never answered",
    )
    return pid, occ


async def test_the_overview_lists_what_needs_a_person(api: Api) -> None:
    _, occ = await needing_review(api)
    text = await page(api, "/dashboard/")
    attention = text.split("<h2>Needs a person</h2>", 1)[1].split("</section>", 1)[0]
    assert occ.key in attention and "needs review" in attention
    assert "the provider never answered" in attention
    assert count(text, "Occurrences", "needs review") == 1


async def test_names_and_memos_are_escaped(api: Api) -> None:
    evil = "<svg onload=alert(1)>"  # no "/": a name is one URL segment
    await accounts(api, {evil: "", "bob": ""})
    memo = '<img src=x onerror="alert(1)">'
    r = await api.post(
        "/v1/payments",
        {"from": evil, "to": "bob", "amount": "1.00", "in": "1h", "memo": memo},
        "write",
    )
    assert r.status_code == 201, r.text
    for path in ("/dashboard/", f"/dashboard/payments/{r.json()['id']}"):
        text = await page(api, path)
        assert evil not in text and "<img src=x" not in text
        assert html.escape(evil) in text
    assert "&lt;img src=x onerror=" in text  # the memo, shown as text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/dashboard/payments/999999", 404, "no payment with id 999999"),
        ("/dashboard/payments/2147483648", 404, "no payment with id 2147483648"),
        ("/dashboard/payments/99999999999999", 422, "expected a positive integer id"),
        ("/dashboard/payments/abc", 422, "expected a positive integer id"),
        ("/dashboard/payments/-1", 422, "expected a positive integer id"),
        ("/dashboard/nothing-here", 404, "no such page"),
    ],
)
async def test_bad_addresses_are_pages_not_errors(
    api: Api, path: str, status: int, says: str
) -> None:
    r = await api.client.get(path, headers=signed(api, "read"))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert says in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] in r.text
    bad_action = await api.client.post(
        "/dashboard/payments/1/explode", headers=signed(api, "write") | HX
    )
    assert bad_action.status_code == 404
    assert "no action 'explode'" in html.unescape(bad_action.text)


async def test_the_static_files_come_from_the_package(api: Api) -> None:
    static = importlib.resources.files("paysched.web") / "static"
    for name, kind in (
        ("htmx.min.js", "javascript"),
        ("htmx-ext-sse.min.js", "javascript"),
        ("dashboard.css", "text/css"),
    ):
        r = await api.client.get(f"/dashboard/static/{name}")  # no key needed
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert r.content == (static / name).read_bytes()
    assert (await api.client.get("/dashboard/static/htmx.min.js")).text.startswith("/*! htmx 2.")
    assert "0BSD" in (static / "htmx-ext-sse.min.js").read_text().splitlines()[0]
    assert (await api.client.get("/dashboard/static/../auth.py")).status_code == 404
    overview = await page(api, "/dashboard/")
    assert "/dashboard/static/htmx.min.js" in overview and "https://" not in overview


async def test_the_key_never_reaches_a_page_a_url_or_a_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **{"in": "1h"})
    key = api.keys["write"]
    login = await api.client.post(
        "/dashboard/login", data={"key": key}, headers={"Origin": "http://api"}
    )
    seen = [login.text, login.headers["location"]]
    for path in ("/dashboard/", f"/dashboard/payments/{pid}", "/dashboard/payments/x"):
        r = await api.client.get(path)
        seen += [r.text, str(r.url)]
    seen.append((await api.client.post(f"/dashboard/payments/{pid}/cancel", headers=HX)).text)
    for text in [*seen, caplog.text]:
        assert key not in text and key.split("_", 2)[2] not in text


# -- live --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(app: App, **options: float) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """The API on a real port, as `paysched serve` runs it (httpx's ASGI transport would buffer
    a stream to its end); `options` go to serve()."""
    stop = asyncio.Event()
    sock = listen("127.0.0.1", 0)
    task = asyncio.create_task(serve(app, sock, stop, **options))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await wait_for(up, 15, "the API to listen")
        yield url, stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        sock.close()


async def events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a text/event-stream."""
    name, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", list[str]()
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


async def test_the_overview_streams_and_changes_when_a_payment_completes(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    subscribers = len(api.app.bus._subscribers)
    async with (
        served(api.app) as (url, stop),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/dashboard/events", headers=signed(api, "read")) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        received = events(stream.aiter_lines())
        async with asyncio.timeout(10):
            name, first = await anext(received)
        assert name == "overview" and count(first, "Occurrences", "succeeded") == 0
        assert len(api.app.bus._subscribers) == subscribers + 1
        pid = await schedule(api, **{"in": "100ms"})
        async with running(api.app), asyncio.timeout(30):
            async for name, data in received:  # the next ones, until the payment shows
                if name == "overview" and count(data, "Occurrences", "succeeded") == 1:
                    break
            assert f"/dashboard/payments/{pid}" in data and "s-succeeded" in data
        # The server stopping ends the stream at once, not after uvicorn's grace time.
        stop.set()
        async with asyncio.timeout(5):
            async for _ in received:
                pass
    await wait_for(
        lambda: _async(len(api.app.bus._subscribers) == subscribers), 5, "the stream to unsubscribe"
    )


async def _async(value: bool) -> bool:
    return value


# -- what needs a person, acted on -------------------------------------------------------------


async def test_an_admin_resolves_an_occurrence_by_hand(api: Api) -> None:
    pid, occ = await needing_review(api)
    store = api.app.store
    detail = f"/dashboard/payments/{pid}"
    resolve = f"/dashboard/occurrences/{occ.id}/resolve"
    assert f'hx-post="{resolve}"' in await page(api, detail, "admin")
    assert "needs an admin key" in await page(api, detail, "write")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    denied = await api.client.post(
        resolve, content="outcome=retry&reason=x", headers=signed(api, "write") | HX | form
    )
    assert denied.status_code == 403
    # No reason: refused with the field's message, nothing changed.
    r = await api.client.post(
        resolve, content="outcome=retry&reason=+", headers=signed(api, "admin") | HX | form
    )
    assert r.status_code == 422 and "say why" in r.text
    # The ledger moves money itself: "succeeded" by hand is refused for it, with the reason.
    r = await api.client.post(
        resolve, content="outcome=succeeded&reason=seen", headers=signed(api, "admin") | HX | form
    )
    assert r.status_code == 409 and "ledger executor" in r.text
    r = await api.client.post(
        resolve,
        content="outcome=retry&reason=provider+is+back",
        headers=signed(api, "admin") | HX | form,
    )
    assert r.status_code == 200 and "now queued" in r.text, r.text
    assert r.headers["hx-trigger"] == "payment-changed"
    again = await api.app.db(store.reads.get_occurrence, occ.id)
    assert again.state == OccurrenceState.QUEUED
    history = await api.app.db(store.reads.transitions_of, [occ.id])
    assert history[-1].reason is not None and "provider is back" in history[-1].reason
    bad = await api.client.post(
        "/dashboard/occurrences/999999/resolve",
        content="outcome=retry&reason=x",
        headers=signed(api, "admin") | HX | form,
    )
    assert bad.status_code == 404


async def test_a_dead_notification_is_sent_again(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    # Telegram is not set up in this app: its notification is dead at its first delivery.
    r = await api.post(
        "/v1/payments",
        {"from": "alice", "to": "bob", "amount": "1.00", "in": "200ms", "notify": ["telegram:123"]},
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    outbox = api.app.outbox
    assert outbox is not None

    async def dead() -> bool:
        return [n.state for n in await api.app.db(outbox.list, None, pid)] == ["dead"]

    async with running(api.app):
        await all_final(api.app, [pid])
        await wait_for(dead, what="the notification to be dead")
    [sent] = await api.app.db(outbox.list, None, pid)
    retry = f"/dashboard/notifications/{sent.id}/retry"
    assert f'hx-post="{retry}"' in await page(api, f"/dashboard/payments/{pid}", "write")
    r = await api.client.post(retry, headers=signed(api, "write") | HX)
    assert r.status_code == 200 and "will be sent again" in r.text
    assert (await api.app.db(outbox.get, sent.id)).state == "pending"
    twice = await api.client.post(retry, headers=signed(api, "write") | HX)
    assert twice.status_code == 409 and "not dead" in twice.text


async def test_open_tabs_share_one_count_per_interval(api: Api) -> None:
    """Each open stream counted the occurrences (and notifications, and the queue) itself
    every second: five tabs, five counts a second. Now one count per rendering, whatever the
    number of tabs, each tab sent every rendering."""
    tabs, renderings = 5, 3
    counts: list[str] = []

    def before(_c: object, _cur: object, statement: str, *_: object) -> None:
        if "GROUP BY occurrences.state" in statement:
            counts.append(statement)

    engine = api.app.store.engine
    async with served(api.app) as (url, _), httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def tab() -> int:
            seen = 0
            async with client.stream(
                "GET", "/dashboard/events", headers=signed(api, "read")
            ) as stream:
                assert stream.status_code == 200
                async for line in stream.aiter_lines():
                    # Every rendering is an `overview` event or, unchanged, a comment.
                    seen += line.startswith("event: overview") or line == ": unchanged"
                    if seen == renderings:
                        return seen
            return seen

        event.listen(engine, "before_cursor_execute", before)
        try:
            async with asyncio.timeout(30):
                assert await asyncio.gather(*(tab() for _ in range(tabs))) == [renderings] * tabs
        finally:
            event.remove(engine, "before_cursor_execute", before)
    # Tabs that open a little apart may each wait for one more rendering; one per tab would
    # be tabs x renderings = 15.
    assert renderings <= len(counts) <= renderings + 2, len(counts)


async def test_an_accounts_settings_are_shown_and_changed_from_its_page(api: Api) -> None:
    """The account page shows its reminder default and approval rule; a write key changes both
    with one form (as PATCH /v1/accounts/{name}), a bad value is refused naming its field and
    changes nothing, and a read key sees no form and cannot post one."""
    await accounts(api, {"alice": "100.00"})
    base = "/dashboard/accounts/alice"
    shown = await page(api, base, "write")
    assert "<dt>Reminders</dt><dd>off</dd>" in shown
    assert "<dt>Approval</dt><dd>none required</dd>" in shown
    assert f'hx-post="{base}/settings"' in shown
    assert f'hx-post="{base}/settings"' not in await page(api, base, "read")

    async def save(scope: str, **form: str) -> httpx.Response:
        return await api.client.post(
            f"{base}/settings",
            data=form,
            headers=signed(api, scope) | HX,
        )

    saved = await save("write", remind="24h", approval_above="500.00")
    assert saved.status_code == 200, saved.text
    assert "Account alice: reminders 1d before, approval above 500.00 USD." in saved.text
    assert saved.headers["HX-Trigger"] == "payment-changed"  # the card reloads itself
    shown = await page(api, base)
    assert "<dt>Reminders</dt><dd>1d before each payment it pays</dd>" in shown
    assert "<dt>Approval</dt><dd>required above 500.00 USD</dd>" in shown
    account = (await api.get("/v1/accounts/alice")).json()
    assert (account["remind"], account["approval_above"]) == ("86400s", "500.00")
    # A bad amount: refused, naming it, and the remind given beside it is not written either.
    bad = await save("write", remind="2h", approval_above="5.001")
    assert bad.status_code == 422 and "approval_above" in bad.text, bad.text
    assert (await api.get("/v1/accounts/alice")).json()["remind"] == "86400s"
    # Blank fields are off.
    cleared = await save("write", remind="", approval_above="")
    assert "reminders off, approval off" in cleared.text, cleared.text
    account = (await api.get("/v1/accounts/alice")).json()
    assert (account["remind"], account["approval_above"]) == (None, None)
    assert (await save("read", remind="1h")).status_code == 403
    ghost = await api.client.post(
        "/dashboard/accounts/ghost/settings",
        data={"remind": "1h"},
        headers=signed(api, "write") | HX,
    )
    assert ghost.status_code == 404
