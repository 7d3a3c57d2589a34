"""The HTTP API's FastAPI application, over an opened App (see `paysched serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import paysched
from paysched.api import (
    accounts,
    actions,
    chat_links,
    exports,
    notifications,
    occurrences,
    ops,
    payments,
    problems,
    reconciliations,
)
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
read|write|approve|admin`) as `Authorization: Bearer <key>`: `read` for GET, `write` for
creating accounts, deposits, payments, cancels and notification retries, `approve` also for
approving or rejecting occurrences awaiting approval (never of a payment the key created),
`admin` also for resolving occurrences by hand. Every POST takes an `Idempotency-Key`. Errors
are RFC 9457 `application/problem+json` documents with a stable `code` and the offending
`field`.
Money is a decimal string and a currency, never a number.
"""


def _dashboard_form(request: Request, kind: str) -> bool:
    """The dashboard's login form is the one body sent as a browser's urlencoded form."""
    return kind == "application/x-www-form-urlencoded" and request.url.path.startswith(
        "/dashboard/"
    )


_READ = (b"content-length", b"content-type", b"transfer-encoding", b"x-request-id")


def _headers(scope: Scope) -> dict[bytes, str]:
    """The few request headers these middlewares read (the first of each), in one pass over
    the raw list. Starlette's Headers looks an absent header up by raising and catching
    KeyError, and a GET sends none of them: five exceptions a request, 4 % of the CPU of
    GET /v1/payments/{id} (py-spy)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _READ and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _has_body(headers: dict[bytes, str]) -> bool:
    """A body declared by its length, or sent in chunks (no length said)."""
    return headers.get(b"content-length", "") not in ("", "0") or b"transfer-encoding" in headers


def _too_large() -> problems.Problem:
    return problems.Problem(413, "body_too_large", f"request body over {MAX_BODY} bytes")


class BodyLimit:
    """413 once a body passes MAX_BODY, however it is sent. The Content-Length check sees only
    what a client declares: a chunked body declares nothing, and a 100 MB one was read and
    parsed whole (+170 MB of memory) before the memo's own check. Here the body is read and
    counted first, and handed on in one piece: it is at most MAX_BODY, and every route reads
    its body whole anyway. It runs inside RequestId: the 413 carries the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(_headers(scope)):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away mid-body: there is no one to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY:
                # Answered now: the app never sees the body, and uvicorn drops the rest.
                await problems.problem_response(Request(scope), _too_large())(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay() -> Message:
            # The body, then what the client does next (a disconnect) as it happens.
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)


class RequestId:
    """A request id for logs and problems: the client's X-Request-Id if it is sane, else new;
    and the checks of a body's declared length and type. Plain ASGI: as a BaseHTTPMiddleware
    it ran each request through an extra task and memory stream, a fifth of the CPU of
    GET /v1/payments/{id} (py-spy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        headers = _headers(scope)
        given = headers.get(b"x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else f"req_{secrets.token_hex(8)}"
        request.state.request_id = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        problem = _refused(request, headers)
        if problem is not None:
            await problems.problem_response(request, problem)(scope, receive, send_with_id)
        else:
            await self.app(scope, receive, send_with_id)


def _refused(request: Request, headers: dict[bytes, str]) -> problems.Problem | None:
    """413 for a declared length over MAX_BODY, 415 for a body that is not JSON."""
    length = headers.get(b"content-length", "")
    kind = headers.get(b"content-type", "").split(";")[0].strip().lower()
    if length.isdigit() and int(length) > MAX_BODY:
        return _too_large()
    if _has_body(headers) and not (
        kind == "application/json" or kind.endswith("+json") or _dashboard_form(request, kind)
    ):
        return problems.Problem(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
            "Content-Type",
        )
    return None


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
        title="paysched",
        version=paysched.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    api.state.paysched = app
    api.state.idempotency = idempotency
    api.state.guard = Guard(keys, RateLimiter(app.settings.api_rate_limit), app.db, app.clock.now)
    api.add_middleware(BodyLimit)
    api.add_middleware(RequestId)
    api.add_middleware(HeadAsGet)
    problems.install(api)
    install_docs(api)
    for module in (
        accounts,
        chat_links,
        payments,
        occurrences,
        notifications,
        reconciliations,
        ops,
        exports,
        actions,
    ):
        api.include_router(module.router)
    api.mount("/dashboard", create_dashboard(app, api.state.guard, stopping or asyncio.Event()))
    relative_slash_redirects(api.router)
    return api
