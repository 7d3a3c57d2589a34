"""The operator dashboard at /dashboard: Jinja2 pages, vendored htmx, live numbers over SSE.

It is a FastAPI app of its own, mounted inside the API's (see api.app.create_api), so that its
errors are HTML pages rather than problem documents and it stays out of the OpenAPI document.
It signs in with the API's keys, checked with the API's Guard, into sessions of its own (see
web.auth).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from paysched.api.routing import relative_slash_redirects
from paysched.api.security import Guard
from paysched.app import App
from paysched.db.sessions import DashboardSessions
from paysched.web import auth, live, pages, reconciliations, render

# Scripts and styles only from the dashboard's own files (htmx adds one <style> for its
# indicators, hence 'unsafe-inline' for styles alone); no framing (clickjacking of the action
# buttons); forms post only here. Pages may show payment data: never cached.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def _headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers.update(HEADERS)
    if not request.url.path.startswith(f"{auth.PATH}/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def create_dashboard(app: App, guard: Guard, stopping: asyncio.Event) -> FastAPI:
    """The dashboard over `app`; its live streams end when `stopping` is set."""
    web = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    web.state.paysched = app
    web.state.guard = guard  # the API's own: one rate limit per key across API and dashboard
    web.state.stopping = stopping
    settings = app.settings
    web.state.sessions = DashboardSessions(
        app.store.engine, settings.dashboard_idle, settings.dashboard_lifetime
    )
    web.state.live = live.LiveOverview(app, stopping)  # one per process, for every open tab
    render.install(web)
    web.middleware("http")(_headers)

    @web.exception_handler(auth.NotSignedIn)
    async def _login_first(request: Request, exc: auth.NotSignedIn) -> Response:
        response: Response
        if render.is_htmx(request):  # htmx follows HX-Redirect with a full page load
            response = Response(status_code=401, headers={"HX-Redirect": auth.LOGIN})
        elif request.url.path.endswith("/events"):  # a stream: an EventSource stops on a 401
            response = Response(status_code=401)
        else:
            response = RedirectResponse(auth.LOGIN, status_code=303)
        if exc.stale:
            auth.clear_cookie(request, response)
        if exc.why is not None:
            auth.tell_ended(request, response, exc.why)
        return response

    # htmx, its SSE extension and the stylesheet, from the installed package (no CDN).
    web.mount("/static", StaticFiles(packages=[("paysched.web", "static")]), name="static")
    web.include_router(pages.router)
    web.include_router(reconciliations.router)
    relative_slash_redirects(web.router)
    return web
