"""RFC 9457 problem details: every error the API answers with, and the handlers that make them.

Each problem carries a stable `code` (for programs), a `detail` (for people), the offending
`field` when one is to blame, and the request id (also in the X-Request-Id header) to find the
request in the logs. Bad input is a 4xx naming the field; nothing paysched raises on purpose
becomes a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles

from paysched.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    PayschedError,
    ValueRefused,
)
from paysched.redaction import redact

log = logging.getLogger("paysched.api")

PROBLEM_JSON = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.errors = errors


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://paysched.dev/problems/{problem.code}",
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "code": problem.code,
        "detail": redact(problem.detail),
        "instance": request.url.path,
        "request_id": request_id(request),
    }
    if problem.field is not None:
        body["field"] = problem.field
    if problem.errors:
        body["errors"] = problem.errors
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


def from_paysched(exc: PayschedError) -> Problem:
    if isinstance(exc, InvalidInput):
        return Problem(422, "invalid_input", str(exc), exc.field)
    if isinstance(exc, NotFound):
        return Problem(404, "not_found", str(exc))
    if isinstance(exc, Conflict):
        return Problem(409, "conflict", str(exc))
    if isinstance(exc, ValueRefused):
        return Problem(422, "invalid_input", "a value is out of range for the database")
    if isinstance(exc, DatabaseUnavailable | DatabaseError):
        # The driver's words name hosts and statements: they go to the log (see install).
        return Problem(
            503,
            "backend_unavailable",
            "the database or Redis did not answer; try again",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, BackendUnavailable):
        return Problem(503, "backend_unavailable", str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, ConfigError):
        return Problem(503, "misconfigured", str(exc), exc.variable)
    return Problem(409, "rejected", str(exc))


def _field(loc: tuple[Any, ...]) -> str:
    """('body', 'amount') -> 'amount'; ('query', 'limit') -> 'limit'; a header by its name."""
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts) or "body"


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request, mounted: bool = False) -> list[str]:
    """The methods some route takes at this path, each asked of the routes as a request with
    that method (FastAPI's included routers keep their own routes out of `app.routes`).
    `mounted`: asked from an app mounted under the API (the dashboard), whose routes are
    matched below the mount's root_path."""
    routes = request.app.router.routes
    # As the app saw the request: a mount on the way here moved its root_path.
    root = request.scope.get("root_path", "")
    if not mounted:
        root = request.scope.get("app_root_path", root)
    scope = dict(request.scope, root_path=root)
    taken = {
        method
        for method in METHODS
        if any(_takes(route, dict(scope, method=method)) for route in routes)
    }
    if "GET" in taken:  # answered as GET without the body (api.routing.HeadAsGet)
        taken.add("HEAD")
    return sorted(taken)


def _takes(route: BaseRoute, scope: dict[str, Any]) -> bool:
    # A mount matches every method under its path; the one here that answers 405 itself
    # serves files (/docs/files), which take GET and HEAD.
    if isinstance(route, Mount) and (
        not isinstance(route.app, StaticFiles) or scope["method"] not in ("GET", "HEAD")
    ):
        return False
    return route.matches(scope)[0] is Match.FULL


def install(api: FastAPI) -> None:
    @api.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @api.exception_handler(PayschedError)
    async def _paysched(request: Request, exc: PayschedError) -> JSONResponse:
        problem = from_paysched(exc)
        if problem.status == 503 and isinstance(exc, DatabaseUnavailable | DatabaseError):
            log.warning("request %s: backend error: %s", request_id(request), exc)
        return problem_response(request, problem)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(tuple(e.get("loc", ()))), "detail": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "detail": "invalid request"}
        detail = f"{first['field']}: {first['detail']}"
        return problem_response(
            request, Problem(422, "invalid_input", detail, first["field"], errors=errors)
        )

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route matching the path; a client
            # needs all of them (GET and POST on /v1/accounts are two routes).
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(
            request, Problem(exc.status_code, code, str(exc.detail), headers=headers)
        )

    # Backend errors get handlers of their own classes, not only the catch-all below:
    # Starlette answers a handler of `Exception` from its outermost middleware and then raises
    # the error again for the server to log, so a database outage answered 503 and still
    # printed a traceback per request. (The database's errors arrive as paysched's, handled
    # above: see paysched.db.errors.)
    from redis import RedisError

    async def _backend(request: Request, exc: Exception) -> JSONResponse:
        log.warning("request %s: backend error: %s", request_id(request), exc)
        return problem_response(
            request,
            Problem(
                503,
                "backend_unavailable",
                "the database or Redis did not answer; try again",
                headers={"Retry-After": "5"},
            ),
        )

    for backend_error in (RedisError, OSError):
        api.add_exception_handler(backend_error, _backend)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug: ours, logged with its traceback.
        if isinstance(exc, RedisError | OSError):
            return await _backend(request, exc)
        log.exception("request %s failed", request_id(request))
        detail = "internal error; the log has the details under this request id"
        return problem_response(request, Problem(500, "internal", detail))
