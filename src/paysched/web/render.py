"""Templates (Jinja2, autoescaped) and the dashboard's error pages.

Every error a dashboard route meets becomes an HTML page with its status and the request id,
never a problem document, a 500 or a traceback: an operator reads it in a browser.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.exceptions import HTTPException as StarletteHTTPException

from paysched.api.problems import TITLES, Problem, allowed_methods, from_paysched, request_id
from paysched.errors import PayschedError
from paysched.redaction import redact
from paysched.views import duration_text
from paysched.web.times import zone_of, zoned

# autoescape=True for every template: all of them are HTML, and names and memos are whatever a
# client typed (a memo "<script>..." must render as text).
templates = Environment(
    loader=PackageLoader("paysched.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# One path segment, every reserved character escaped (Jinja's urlencode keeps '/'): account
# names made before new_account_name refused '/', '?', '#' and '%' still get their page.
templates.filters["segment"] = lambda value: quote(str(value), safe="")
# A time in a payment's own zone beside UTC (see times.py): globals, so every template and
# every path that renders one (a page, an htmx reload, a live update) has them.
templates.globals["zoned"] = zoned
templates.globals["zone_of"] = zone_of
templates.filters["duration"] = duration_text  # milliseconds as "2m 03s"


def render(name: str, **context: Any) -> str:
    return templates.get_template(name).render(**context)


def page(
    request: Request,
    name: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A template as a response; `scope` is the signed-in key's, if any (for the header)."""
    key = getattr(request.state, "dashboard_key", None)
    context.setdefault("scope", key.scope if key is not None else None)
    context.setdefault("key_name", key.name if key is not None else None)
    return HTMLResponse(render(name, **context), status_code=status_code, headers=headers)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request", "").lower() == "true"


def error_page(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    """An error as a page, or as the fragment an htmx request swaps in where its result goes."""
    context = {
        "status": status,
        "title": TITLES.get(status, "Error"),
        "detail": redact(detail),
        "request_id": request_id(request),
    }
    name = "_error.html" if is_htmx(request) else "error.html"
    return page(request, name, status, headers, **context)


def install(web: FastAPI) -> None:
    """Error pages for everything a route may raise (the API's handlers answer JSON)."""

    @web.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return error_page(request, exc.status, exc.detail, exc.headers)

    @web.exception_handler(PayschedError)
    async def _paysched(request: Request, exc: PayschedError) -> Response:
        problem = from_paysched(exc)
        return error_page(request, problem.status, problem.detail, problem.headers)

    @web.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        where = ", ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return error_page(request, 422, f"invalid input ({where})")

    @web.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = {404: "no such page", 405: "this page does not take that method"}.get(
            exc.status_code, str(exc.detail)
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, HEAD with GET (as the API's)
            headers["Allow"] = ", ".join(allowed_methods(request, mounted=True))
        return error_page(request, exc.status_code, detail, headers)
