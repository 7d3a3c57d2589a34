"""Signing in to the dashboard with an API key, a server-side session, and CSRF.

A browser cannot send `Authorization: Bearer`, so /dashboard/login takes the key in a form,
checks it exactly as the API checks a Bearer key (the same Guard: hash lookup, revocation, the
per-key rate limit) and starts a session (db.sessions): the cookie holds only a random token,
the database only its hash. The cookie is for the dashboard alone (Path=/dashboard), scripts
cannot read it (HttpOnly) and no other site's page can make the browser send it
(SameSite=Strict). Every request then finds its session and key (unrevoked, the session not
idle or too old) and counts against the key's rate limit as an API request does; pages need
scope read, actions write.

CSRF: besides SameSite=Strict, every POST must carry `HX-Request` (a header another site's
form cannot set, and that its scripts can only send after a CORS preflight we never allow) or
an `Origin` naming this host (what a browser sends with a plain form post). An `Origin` that
names another site (or "null") is refused even with `HX-Request`: the browser says where the
request came from, and a header is no reason to doubt it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

from fastapi import Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from paysched.api.problems import Problem
from paysched.api.security import Guard
from paysched.app import App
from paysched.db.apikeys import ApiKey
from paysched.db.sessions import ENDED, DashboardSessions

COOKIE = "paysched_session"
# What the cookie was called when it held the API key itself: cleared at sign-in and sign-out,
# so that a browser signed in before sessions stops sending the key.
OLD_COOKIE = "paysched_key"
PATH = "/dashboard"
LOGIN = f"{PATH}/login"
ENDED_COOKIE = "paysched_ended"


class NotSignedIn(Exception):
    """No cookie, or its session is unknown or ended (or its key revoked): to the login page."""

    def __init__(self, stale: bool, why: str | None = None) -> None:
        super().__init__("not signed in")
        self.stale = stale  # a cookie was sent and is no good: clear it
        self.why = why  # why its session ended (sessions.ENDED), told on the sign-in page


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin", "")
    host = request.headers.get("host", "")
    # The host and port only: behind a proxy that ends TLS the scheme seen here differs.
    return bool(origin and host) and urlsplit(origin).netloc.lower() == host.lower()


def check_csrf(request: Request) -> None:
    if "origin" in request.headers:
        if same_origin(request):
            return
        raise Problem(
            403,
            "cross_site",
            "refused: this form was not sent from the dashboard (its Origin names another site)",
        )
    if request.headers.get("hx-request", "").lower() == "true":
        return
    raise Problem(
        403,
        "cross_site",
        "refused: this form was not sent from the dashboard "
        "(no HX-Request header and no Origin naming this host)",
    )


async def verify(guard: Guard, key: str) -> ApiKey | None:
    """The key's row if it is valid (counted against its rate limit), None if unknown or
    revoked. A rate-limited key is a 429 Problem."""
    try:
        return await guard.authenticate(
            HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)
        )
    except Problem as problem:
        if problem.status == 401:
            return None
        raise


def signed_in(needed: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency: the key of the cookie's session, which must allow `needed`; POSTs pass
    CSRF first."""

    async def check(request: Request) -> ApiKey:
        if request.method == "POST":
            check_csrf(request)
        token = request.cookies.get(COOKIE, "")
        if not token:
            raise NotSignedIn(stale=False)
        app: App = request.app.state.paysched
        sessions: DashboardSessions = request.app.state.sessions
        session = await app.db(sessions.find_or_why, token, app.clock.now())
        if isinstance(session, str):
            raise NotSignedIn(stale=True, why=session)
        guard: Guard = request.app.state.guard
        found = await guard.admit(session.key)  # the key's rate limit, as an API request
        request.state.dashboard_key = found
        if not found.allows(needed):
            raise Problem(
                403,
                "insufficient_scope",
                f"this needs a key with scope {needed!r} "
                f"or above; you signed in with a {found.scope!r} key",
            )
        return found

    return check


def still_signed_in(request: Request) -> Callable[[], Awaitable[bool]]:
    """For a live stream: whether the session it was opened with still is (not ended, its key
    not revoked). It does not count as a request: an open tab alone does not keep a session
    from idling out, nor use up the key's rate limit."""
    app: App = request.app.state.paysched
    sessions: DashboardSessions = request.app.state.sessions
    token = request.cookies.get(COOKIE, "")

    async def check() -> bool:
        found = await app.db(sessions.find_or_why, token, app.clock.now(), False, False)
        return not isinstance(found, str)

    return check


async def form_field(request: Request, name: str) -> str:
    """One field of a urlencoded form (the login form is the only body the dashboard takes;
    parsed here rather than with python-multipart, which FastAPI's Form would need)."""
    body = (await request.body()).decode("utf-8", "replace")
    values = parse_qs(body, max_num_fields=10).get(name, [""])
    return values[0].strip()


async def sign_in(request: Request, response: Response, key: ApiKey) -> None:
    """A new session of `key`; the response sets its token as the cookie."""
    app: App = request.app.state.paysched
    sessions: DashboardSessions = request.app.state.sessions
    if previous := request.cookies.get(COOKIE, ""):  # signing in again: the old one ends
        await app.db(sessions.end, previous)
    token = await app.db(sessions.create, key.id, app.clock.now())
    # No Max-Age: the cookie goes when the browser closes; the server's session ends sooner.
    https = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, path=PATH, httponly=True, samesite="strict", secure=https)
    if OLD_COOKIE in request.cookies:
        clear_cookie(request, response, OLD_COOKIE)


async def sign_out(request: Request, response: Response) -> None:
    """The cookie's session ends (its row goes), and the response clears the cookie."""
    token = request.cookies.get(COOKIE, "")
    if token:
        app: App = request.app.state.paysched
        sessions: DashboardSessions = request.app.state.sessions
        await app.db(sessions.end, token)
    clear_cookie(request, response)
    if OLD_COOKIE in request.cookies:
        clear_cookie(request, response, OLD_COOKIE)


def tell_ended(request: Request, response: Response, why: str) -> None:
    """Carry why the session ended to the sign-in page, in a cookie of its own that only that
    page reads and clears: the redirect's location stays /dashboard/login. The first
    request to find the session ended knows why; later ones only find no session, and do
    not overwrite the reason not yet told."""
    if why == "unknown" and ENDED_COOKIE in request.cookies:
        return
    response.set_cookie(
        ENDED_COOKIE,
        why,
        max_age=300,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def told_ended(request: Request) -> str | None:
    """Why the last session ended, if the sign-in page was sent here for that."""
    why = request.cookies.get(ENDED_COOKIE)
    return why if why in ENDED else None


def clear_cookie(request: Request, response: Response, name: str = COOKIE) -> None:
    response.delete_cookie(
        name, path=PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
