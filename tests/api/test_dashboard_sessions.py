"""The dashboard's server-side sessions (a random token in the cookie, its hash in
dashboard_sessions), their idle and absolute expiry on an injected clock, revocation at the next
request and the next live event, the payment page's own stream, and the confirmations that
name what an action is about to do."""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from paysched.api import create_api
from paysched.app import App
from paysched.clock import ManualClock
from paysched.config import Settings
from paysched.db import tables as t
from paysched.db.apikeys import ApiKeys
from paysched.db.sessions import TOUCH_EVERY
from paysched.errors import ConfigError
from paysched.web.auth import COOKIE
from tests.api.conftest import Api
from tests.api.test_api import accounts
from tests.api.test_dashboard import HX, events, needing_review, schedule, served, signed
from tests.integration.helpers import running

ORIGIN = {"Origin": "http://api"}


@pytest.fixture
async def clocked(settings: Settings) -> AsyncIterator[tuple[Api, ManualClock]]:
    """The API over an App whose clock only moves when the test says (sessions expire by it)."""
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    app = await App.open(settings, clock=clock)
    try:
        keys = ApiKeys(app.store.engine)
        made = {
            s: (await app.db(keys.create, f"test-{s}", s, clock.now()))[1]
            for s in ("read", "write", "admin")
        }
        fastapi = create_api(app)
        transport = httpx.ASGITransport(app=fastapi)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, fastapi, client, made), clock
    finally:
        await app.close()


async def sign_in(api: Api, scope: str = "read") -> str:
    """Signs the client in with the `scope` key (it keeps the cookie); the session's token."""
    r = await api.client.post("/dashboard/login", data={"key": api.keys[scope]}, headers=ORIGIN)
    assert r.status_code == 303, r.text
    token = api.client.cookies[COOKIE]
    assert token
    return token


async def session_rows(app: App) -> list[dict[str, object]]:
    def read() -> list[dict[str, object]]:
        with app.store.engine.connect() as conn:
            rows = conn.execute(select(t.dashboard_sessions).order_by(t.dashboard_sessions.c.id))
            return [dict(r._mapping) for r in rows]

    return await app.db(read)


async def opens(api: Api, path: str = "/dashboard/") -> bool:
    """Whether the client's cookie opens the page (else it is sent to sign in)."""
    r = await api.client.get(path)
    if r.status_code == 303:
        assert r.headers["location"] == "/dashboard/login"
        return False
    assert r.status_code == 200, (r.status_code, r.text)
    return True


async def told(api: Api) -> str | None:
    """What the sign-in page says about the session that ended (then never again)."""
    r = await api.client.get("/dashboard/login")
    assert r.status_code == 200
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', r.text)
    again = await api.client.get("/dashboard/login")
    assert 'class="flash" role="status"' not in again.text
    return html.unescape(found.group(1)) if found else None


# -- what the cookie and the table hold ---------------------------------------------------------


async def test_the_cookie_holds_a_random_token_and_the_table_only_its_hash(api: Api) -> None:
    key = api.keys["write"]
    token = await sign_in(api, "write")
    secret = key.split("_", 2)[2]
    assert key not in token and secret not in token and len(token) >= 43
    [row] = await session_rows(api.app)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(v) for v in row.values()}
    assert row["expires_at"] == row["created_at"] + timedelta(hours=12)  # type: ignore[operator]
    keys = {k.name: k for k in await api.app.db(ApiKeys(api.app.store.engine).list)}
    assert row["api_key_id"] == keys["test-write"].id
    # Two sign-ins are two sessions, each its own token.
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.api), base_url="http://api")
    async with other:
        r = await other.post("/dashboard/login", data={"key": key}, headers=ORIGIN)
        assert r.status_code == 303 and other.cookies[COOKIE] != token
    assert len(await session_rows(api.app)) == 2
    # The old cookie (the key itself) opens nothing now, and signing in clears it.
    old = {"Cookie": f"paysched_key={key}"}
    r = await api.client.get("/dashboard/", headers=old)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    fresh = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.api), base_url="http://api")
    async with fresh:
        r = await fresh.post("/dashboard/login", data={"key": key}, headers=ORIGIN | old)
        assert r.status_code == 303
        assert 'paysched_key="";' in "\n".join(r.headers.get_list("set-cookie"))


async def test_signing_out_deletes_the_session_and_its_token_opens_nothing(api: Api) -> None:
    token = await sign_in(api)
    assert await opens(api)
    out = await api.client.get("/dashboard/logout")
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    assert out.headers["set-cookie"].startswith(f'{COOKIE}="";')
    assert await session_rows(api.app) == []
    assert await told(api) is None  # signing out is no surprise
    # A copy of the cookie kept from before is worth nothing.
    again = await api.client.get("/dashboard/", headers={"Cookie": f"{COOKIE}={token}"})
    assert again.status_code == 303 and again.headers["location"] == "/dashboard/login"
    assert await told(api) == (
        "Your session has ended (signed out here or elsewhere). Sign in again."
    )
    # Signing in again over a live session ends that one: one row per browser.
    first = await sign_in(api)
    second = await sign_in(api)
    assert first != second and len(await session_rows(api.app)) == 1
    assert await opens(api)


# -- expiry, on the injected clock --------------------------------------------------------------


async def test_a_session_ends_after_30_idle_minutes(clocked: tuple[Api, ManualClock]) -> None:
    api, clock = clocked
    await sign_in(api)
    [row] = await session_rows(api.app)
    # Used within the idle time again and again: it lives on, past the first 30 minutes.
    for _ in range(3):
        clock.advance(timedelta(minutes=29))
        assert await opens(api)
    # last_seen_at is written at most once a minute: 30 s later it has not moved.
    seen = (await session_rows(api.app))[0]["last_seen_at"]
    assert seen == clock.now() and seen != row["last_seen_at"]
    clock.advance(TOUCH_EVERY / 2)
    assert await opens(api)
    assert (await session_rows(api.app))[0]["last_seen_at"] == seen
    # 30 minutes without a request: ended, its row gone, the cookie cleared.
    clock.advance(timedelta(minutes=30) - TOUCH_EVERY / 2)
    r = await api.client.get("/dashboard/")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert r.headers["set-cookie"].startswith(f'{COOKIE}="";')
    assert await session_rows(api.app) == []
    # The sign-in page says why, once.
    assert await told(api) == "You were signed out after 30m without a request. Sign in again."


async def test_a_session_ends_12_hours_after_sign_in_however_used(
    clocked: tuple[Api, ManualClock],
) -> None:
    api, clock = clocked
    await sign_in(api)
    for _ in range(35):  # 11 h 40 min, never idle
        clock.advance(timedelta(minutes=20))
        assert await opens(api)
    clock.advance(timedelta(minutes=19))
    assert await opens(api)
    clock.advance(timedelta(minutes=1))
    assert not await opens(api)
    assert await told(api) == (
        "Your session reached its limit of 12h since signing in. Sign in again."
    )
    # A new sign-in purges ended sessions, other people's too.
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.api), base_url="http://api")
    async with other:
        for scope in ("write", "admin"):
            r = await other.post("/dashboard/login", data={"key": api.keys[scope]}, headers=ORIGIN)
            assert r.status_code == 303
        clock.advance(timedelta(minutes=31))
        await sign_in(api)
    assert len(await session_rows(api.app)) == 1


def test_the_session_times_are_settings() -> None:
    base = {"DATABASE_URL": "sqlite:///x.db", "REDIS_URL": "redis://127.0.0.1:6379"}
    default = Settings.from_env(base)
    assert default.dashboard_idle == timedelta(minutes=30)
    assert default.dashboard_lifetime == timedelta(hours=12)
    chosen = Settings.from_env(
        base | {"PAYSCHED_DASHBOARD_IDLE": "10m", "PAYSCHED_DASHBOARD_LIFETIME": "8h"}
    )
    assert (chosen.dashboard_idle, chosen.dashboard_lifetime) == (
        timedelta(minutes=10),
        timedelta(hours=8),
    )
    for name, value in (("PAYSCHED_DASHBOARD_IDLE", "30s"), ("PAYSCHED_DASHBOARD_LIFETIME", "x")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(base | {name: value})


# -- revocation, the rate limit -----------------------------------------------------------------


async def test_a_revoked_key_is_sent_to_sign_in_at_its_next_request(api: Api) -> None:
    keys = ApiKeys(api.app.store.engine)
    row, key = await api.app.db(keys.create, "leaving", "write", api.app.clock.now())
    api.keys["leaving"] = key
    token = await sign_in(api, "leaving")
    assert await opens(api)
    assert (await api.client.get("/dashboard/session")).status_code == 204
    await api.app.db(keys.revoke, row.id, api.app.clock.now())
    cookie = {"Cookie": f"{COOKIE}={token}"}
    # An htmx request (a button, the page's probe): 401 and HX-Redirect to sign-in.
    for path in ("/dashboard/", "/dashboard/session"):
        r = await api.client.get(path, headers=HX | cookie)
        assert r.status_code == 401 and r.headers["hx-redirect"] == "/dashboard/login"
    # The stream is refused with a 401; a page leads to sign-in, and the cookie goes.
    assert (await api.client.get("/dashboard/events", headers=cookie)).status_code == 401
    r = await api.client.get("/dashboard/", headers=cookie)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert await session_rows(api.app) == []
    # (Each request here sent its own Cookie header, not the browser's other cookies: the
    # last one could only say the session is gone.)
    assert await told(api) == (
        "Your session has ended (signed out here or elsewhere). Sign in again."
    )
    # As a browser sends it: the first request to find the key revoked tells the sign-in page.
    again = await sign_in(api, "write")
    writer = await api.app.db(keys.verify, api.keys["write"])
    assert writer is not None
    await api.app.db(keys.revoke, writer.id, api.app.clock.now())
    r = await api.client.get("/dashboard/", headers=HX)
    assert r.status_code == 401 and r.headers["hx-redirect"] == "/dashboard/login"
    assert again not in str(api.client.cookies.get(COOKIE))  # cleared
    assert await told(api) == (
        "The API key you signed in with was revoked. Sign in with another key."
    )


async def test_session_requests_count_against_the_keys_rate_limit(
    settings: Settings,
) -> None:
    app = await App.open(settings.with_overrides(api_rate_limit=1))  # bursts of 2
    try:
        keys = ApiKeys(app.store.engine)
        _, key = await app.db(keys.create, "slow", "read", app.clock.now())
        transport = httpx.ASGITransport(app=create_api(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            r = await client.post("/dashboard/login", data={"key": key}, headers=ORIGIN)
            assert r.status_code == 303  # the sign-in is one request of the key
            statuses = [(await client.get("/dashboard/session")).status_code for _ in range(3)]
            assert 429 in statuses, statuses
            # The same key over the API shares the limit.
            bearer = {"Authorization": f"Bearer {key}"}
            assert (await client.get("/v1/stats", headers=bearer)).status_code == 429
    finally:
        await app.close()


# -- live streams end with signed-out ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/events", "/dashboard/payments/{pid}/events"])
async def test_a_stream_says_signed_out_at_its_next_event_once_the_key_is_revoked(
    api: Api, path: str
) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **{"in": "1h"})
    keys = ApiKeys(api.app.store.engine)
    row, key = await api.app.db(keys.create, "leaving", "read", api.app.clock.now())
    api.keys["leaving"] = key
    async with (
        served(api.app) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", path.format(pid=pid), headers=signed(api, "leaving")) as stream,
    ):
        assert stream.status_code == 200
        received = events(stream.aiter_lines())
        async with asyncio.timeout(10):
            name, _ = await anext(received)
        assert name in ("overview", "payment")
        await api.app.db(keys.revoke, row.id, api.app.clock.now())
        async with asyncio.timeout(5):  # the next event (one a second at most)
            name, _ = await anext(received)
            assert name == "signed-out"
            assert [e async for e in received] == []  # and the stream ends


async def test_a_stream_says_signed_out_once_its_session_idled_out(
    clocked: tuple[Api, ManualClock],
) -> None:
    api, clock = clocked
    async with (
        served(api.app) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/dashboard/events", headers=signed(api, "read")) as stream,
    ):
        received = events(stream.aiter_lines())
        async with asyncio.timeout(10):
            assert (await anext(received))[0] == "overview"
        # An open tab is not a person using it: the stream does not keep its session alive.
        clock.advance(timedelta(minutes=30))
        async with asyncio.timeout(5):
            async for name, _ in received:
                if name != "overview":
                    break
        assert name == "signed-out"


# -- the payment page, live ---------------------------------------------------------------------


async def payment_states(received: AsyncIterator[tuple[str, str]]) -> AsyncIterator[str]:
    """The payment's status as each `payment` event shows it."""
    async for name, data in received:
        assert name == "payment", (name, data)
        found = re.search(r"<h1>Payment #\d+ <span class=\"status s-(\w+)\"", data)
        assert found, data
        yield found.group(1)


async def test_the_payment_page_streams_its_detail_as_the_payment_runs(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **{"in": "1s"})
    page = await api.client.get(f"/dashboard/payments/{pid}", headers=signed(api, "write"))
    assert f'sse-connect="/dashboard/payments/{pid}/events"' in page.text
    assert 'sse-swap="payment"' in page.text
    async with (
        served(api.app) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream(
            "GET", f"/dashboard/payments/{pid}/events", headers=signed(api, "write")
        ) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        states = payment_states(events(stream.aiter_lines()))
        async with asyncio.timeout(10):
            assert await anext(states) == "pending"
        # It ran (a worker of this process): the page is told, without a reload.
        async with running(api.app), asyncio.timeout(30):
            async for state in states:
                if state == "succeeded":
                    break
            assert state == "succeeded"


async def test_the_payment_stream_sees_changes_made_elsewhere(api: Api) -> None:
    """A change that emits nothing in this process (another process's worker, say) shows at
    the next periodic rendering; an unchanged detail is not sent again."""
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, cron="0 9 * * 1")
    async with (
        served(api.app) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream(
            "GET", f"/dashboard/payments/{pid}/events", headers=signed(api, "read")
        ) as stream,
    ):
        lines = stream.aiter_lines()
        states = payment_states(events(lines))
        async with asyncio.timeout(10):
            assert await anext(states) != "paused"
        store = api.app.store
        await api.app.db(store.control.pause, pid, api.app.clock.now(), None)
        async with asyncio.timeout(10):
            assert await anext(states) == "paused"  # the next one sent is the change


async def test_the_payment_stream_refuses_what_the_page_would(api: Api) -> None:
    cookie = signed(api, "read")
    for path, status in (
        ("/dashboard/payments/999999/events", 404),
        ("/dashboard/payments/abc/events", 422),
        ("/dashboard/payments/1/events?cursor=bad", 422),
    ):
        r = await api.client.get(path, headers=cookie)
        assert r.status_code == status, (path, r.status_code)
        assert r.headers["content-type"].startswith("text/html")
    assert (await api.client.get("/dashboard/payments/1/events")).status_code == 401


# -- confirmations ------------------------------------------------------------------------------


def confirmations(text: str) -> dict[str, str]:
    """hx-post -> hx-confirm of the page's buttons (the resolve buttons by their outcome)."""
    found = {}
    for button in re.findall(r"<button[^>]*>", text, re.S):
        post = re.search(r'hx-post="([^"]+)"', button)
        ask = re.search(r'hx-confirm="([^"]+)"', button)
        outcome = re.search(r"hx-vals='\{\"outcome\": \"(\w+)\"\}'", button)
        if post:
            where = post.group(1) + (f"#{outcome.group(1)}" if outcome else "")
            found[where] = html.unescape(ask.group(1)) if ask else ""
    return found


async def test_every_action_asks_first_naming_payment_amount_and_parties(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, cron="0 9 * * 1", amount="7.25")
    base = f"/dashboard/payments/{pid}"
    named = f"payment #{pid} (7.25 USD, alice → bob)"
    asked = confirmations((await api.client.get(base, headers=signed(api, "write"))).text)
    assert asked[f"{base}/pause"].startswith(f"Pause {named}?")
    assert asked[f"{base}/cancel"].startswith(f"Cancel {named}?")
    assert (await api.client.post(f"{base}/pause", headers=signed(api, "write") | HX)).is_success
    asked = confirmations((await api.client.get(base, headers=signed(api, "write"))).text)
    assert asked[f"{base}/resume"].startswith(f"Resume {named}?")


async def test_resolving_has_no_default_outcome_and_asks_naming_the_outcome(api: Api) -> None:
    pid, occ = await needing_review(api)
    page = (await api.client.get(f"/dashboard/payments/{pid}", headers=signed(api, "admin"))).text
    resolve = f"/dashboard/occurrences/{occ.id}/resolve"
    form = page.split(f'id="resolve-{occ.id}"', 1)[1].split("</form>", 1)[0]
    assert "<select" not in form and "selected" not in form  # nothing chosen beforehand
    asked = confirmations(page)
    for outcome in ("succeeded", "failed", "retry"):
        text = asked[f"{resolve}#{outcome}"]
        assert text.startswith(
            f"Resolve occurrence {occ.key} of payment #{pid} (2.50 USD, "
            f"alice → bob) as {outcome.upper()}:"
        ), text
    # The buttons are not submit buttons: Enter in the reason picks no outcome.
    assert form.count('type="button"') == 3 and 'type="submit"' not in form
    # No outcome sent: refused, naming the field, nothing changed.
    headers = signed(api, "admin") | HX | {"Content-Type": "application/x-www-form-urlencoded"}
    for body in ("reason=seen", "outcome=&reason=seen"):
        r = await api.client.post(resolve, content=body, headers=headers)
        assert r.status_code == 422 and "outcome" in html.unescape(r.text), r.text
    occurrences = await api.app.db(api.app.store.reads.occurrences_of, pid)
    assert [o.state.value for o in occurrences] == ["needs_review"]


async def test_the_page_script_is_served_and_loaded(api: Api) -> None:
    r = await api.client.get("/dashboard/static/dashboard.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert "signed-out" in r.text and "/dashboard/session" in r.text
    page = (await api.client.get("/dashboard/", headers=signed(api, "read"))).text
    assert '<script src="/dashboard/static/dashboard.js"></script>' in page
    assert "<script>" not in page  # the CSP allows no inline script
