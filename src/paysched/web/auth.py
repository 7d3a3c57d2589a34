"""Signing in to the dashboard with an API key, held in a cookie, and CSRF.

A browser cannot send `Authorization: Bearer`, so /dashboard/login takes the key in a form and
sets it as a cookie that only the dashboard sees (Path=/dashboard), that scripts cannot read
(HttpOnly) and that no other site's page can make the browser send (SameSite=Strict). Every
request is then checked exactly as the API checks a Bearer key: the same Guard (hash lookup,
revocation at the next request, the per-key rate limit) and the same scopes (read for pages,
write for actions).

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
from paysched.db.apikeys import ApiKey

COOKIE = "paysched_key"
PATH = "/dashboard"
LOGIN = f"{PATH}/login"


class NotSignedIn(Exception):
    """No cookie, or its key is unknown or revoked: to the login page."""

    def __init__(self, stale: bool) -> None:
        super().__init__("not signed in")
        self.stale = stale  # a cookie was sent and is no good: clear it


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin", "")
    host = request.headers.get("host", "")
    # The host and port only: behind a proxy that ends TLS the scheme seen here differs.
    return bool(origin and host) and urlsplit(origin).netloc.lower() == host.lower()


def check_csrf(request: Request) -> None:
    if "origin" in request.headers:
        if same_origin(request):
            return
        raise Problem(403, "cross_site", "refused: this form was not sent from the dashboard "
                      "(its Origin names another site)")  # fmt: skip
    if request.headers.get("hx-request", "").lower() == "true":
        return
    raise Problem(403, "cross_site", "refused: this form was not sent from the dashboard "
                  "(no HX-Request header and no Origin naming this host)")  # fmt: skip


async def verify(guard: Guard, key: str) -> ApiKey | None:
    """The key's row if it is valid (counted against its rate limit), None if unknown or
    revoked. A rate-limited key is a 429 Problem."""
    try:
        return await guard.authenticate(HTTPAuthorizationCredentials(scheme="Bearer",
                                                                     credentials=key))  # fmt: skip
    except Problem as problem:
        if problem.status == 401:
            return None
        raise


def signed_in(needed: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency: the key in the cookie, which must allow `needed`; POSTs pass CSRF first."""

    async def check(request: Request) -> ApiKey:
        if request.method == "POST":
            check_csrf(request)
        key = request.cookies.get(COOKIE, "")
        if not key:
            raise NotSignedIn(stale=False)
        found = await verify(request.app.state.guard, key)
        if found is None:
            raise NotSignedIn(stale=True)
        request.state.dashboard_key = found
        if not found.allows(needed):
            raise Problem(403, "insufficient_scope", f"this needs a key with scope {needed!r} "
                          f"or above; you signed in with a {found.scope!r} key")  # fmt: skip
        return found

    return check


async def form_field(request: Request, name: str) -> str:
    """One field of a urlencoded form (the login form is the only body the dashboard takes;
    parsed here rather than with python-multipart, which FastAPI's Form would need)."""
    body = (await request.body()).decode("utf-8", "replace")
    values = parse_qs(body, max_num_fields=10).get(name, [""])
    return values[0].strip()


def set_key(request: Request, response: Response, key: str) -> None:
    response.set_cookie(
        COOKIE,
        key,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip  (a session cookie: it goes when the browser closes)


def clear_key(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")  # fmt: skip
