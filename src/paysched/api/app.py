"""The HTTP API's FastAPI application, over an opened App (see `paysched serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.middleware.base import BaseHTTPMiddleware

import paysched
from paysched.api import accounts, notifications, occurrences, ops, payments, problems
from paysched.api.docs import install_docs
from paysched.api.routing import HeadAsGet, relative_slash_redirects
from paysched.api.security import Guard, RateLimiter
from paysched.app import App
from paysched.db.apikeys import ApiKeys
from paysched.db.idempotency import IdempotencyKeys
from paysched.web import create_dashboard

log = logging.getLogger("paysched.api")
MAX_BODY = 64 * 1024  # every request body the API takes fits in a few KiB
PURGE_EVERY_S = 3600.0
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

DESCRIPTION = """\
Scheduled payments, each exactly once, on time, never lost.

Every route under `/v1` needs an API key (`paysched apikeys create NAME --scope
read|write|admin`) as `Authorization: Bearer <key>`: `read` for GET, `write` for creating
accounts, deposits, payments, cancels and notification retries, `admin` for resolving
occurrences by hand. Every POST takes an `Idempotency-Key`. Errors are RFC 9457
`application/problem+json` documents with a stable `code` and the offending `field`.
Money is a decimal string and a currency, never a number.
"""


def _dashboard_form(request: Request, kind: str) -> bool:
    """The dashboard's login form is the one body sent as a browser's urlencoded form."""
    return kind == "application/x-www-form-urlencoded" and request.url.path.startswith(
        "/dashboard/"
    )


async def _request_id(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """A request id for logs and problems: the client's X-Request-Id if it is sane, else new."""
    given = request.headers.get("x-request-id", "")
    request.state.request_id = given if _REQUEST_ID.match(given) else f"req_{secrets.token_hex(8)}"
    length = request.headers.get("content-length", "")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    problem = None
    if length.isdigit() and int(length) > MAX_BODY:
        problem = problems.Problem(413, "body_too_large", f"request body over {MAX_BODY} bytes")
    elif length not in ("", "0") and not (
        kind == "application/json" or kind.endswith("+json") or _dashboard_form(request, kind)
    ):
        problem = problems.Problem(415, "unsupported_media_type", "send the body as JSON with "
                                   "Content-Type: application/json", "Content-Type")  # fmt: skip
    if problem is not None:
        response: Response = problems.problem_response(request, problem)
    else:
        response = await call_next(request)
    response.headers["X-Request-Id"] = request.state.request_id
    return response


async def _purge(app: App, keys: IdempotencyKeys) -> None:
    """Forget idempotency keys past their retention, now and every hour."""
    while True:
        try:
            before = app.clock.now() - app.settings.idempotency_retention
            purged = await app.db(keys.purge, before)
            if purged:
                log.info("forgot %d idempotency key(s) older than %s", purged, before)
        except Exception as exc:  # the database is away: try again next time
            log.warning("purging idempotency keys failed: %s", exc)
        await asyncio.sleep(PURGE_EVERY_S)


def create_api(app: App, stopping: asyncio.Event | None = None) -> FastAPI:
    """The API over `app`, which must have been opened with its queue, and the dashboard at
    /dashboard. Setting `stopping` ends the dashboard's live streams (see api.server)."""
    keys = ApiKeys(app.store.engine)
    idempotency = IdempotencyKeys(app.store.engine)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_purge(app, idempotency))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    api = FastAPI(
        title="paysched", version=paysched.__version__, description=DESCRIPTION,
        lifespan=lifespan, openapi_url="/openapi.json", docs_url=None, redoc_url=None,
    )  # fmt: skip
    api.state.paysched = app
    api.state.idempotency = idempotency
    api.state.guard = Guard(keys, RateLimiter(app.settings.api_rate_limit), app.db, app.clock.now)
    api.add_middleware(BaseHTTPMiddleware, dispatch=_request_id)
    api.add_middleware(HeadAsGet)
    problems.install(api)
    install_docs(api)
    for module in (accounts, payments, occurrences, notifications, ops):
        api.include_router(module.router)
    api.mount("/dashboard", create_dashboard(app, api.state.guard, stopping or asyncio.Event()))
    relative_slash_redirects(api.router)
    return api
