"""HTTP mechanics around the routes that Starlette's defaults get wrong for us."""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def relative_slash_redirects(router: Router) -> None:
    """Answer `/path/` with a redirect to `/path` (or back) when only the other form is
    routed, as Starlette does, but with the path alone in Location: Starlette writes an
    absolute URL from the Host header, which is the client's to choose (a cache or a link
    could then send users elsewhere)."""
    router.redirect_slashes = False
    fallback = router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != scope.get("root_path", "") + "/":
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            moved = dict(scope, path=other)
            # A path that starts with "//" would read as another host in Location.
            if not other.startswith("//") and any(
                route.matches(moved)[0] is not Match.NONE for route in router.routes
            ):
                query = scope.get("query_string", b"").decode("latin-1")
                location = quote(other) + (f"?{query}" if query else "")
                await RedirectResponse(location)(scope, receive, send)
                return
        await fallback(scope, receive, send)

    router.default = default


# Set in the scope of a HEAD request routed as GET: a route that streams (an export) reads
# what its headers need and no more, instead of a whole body that is then dropped.
HEAD = "paysched.head"


class HeadAsGet:
    """HEAD answered as GET, headers only: a path that takes GET takes HEAD (RFC 9110), and
    FastAPI's routes take only the methods they name. The body is dropped here, and a
    streamed one (the dashboard's events) ends at its first part; a route that would read
    long to make its body checks HEAD in the scope (see is_head)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                await send(message)
            elif not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(dict(scope, method="GET", **{HEAD: True}), receive, headers_only)


def is_head(scope: Scope) -> bool:
    """The request is a HEAD (HeadAsGet routed it as GET)."""
    return bool(scope.get(HEAD))
