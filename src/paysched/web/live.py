"""/dashboard/events: the overview, live, as Server-Sent Events (htmx's sse extension swaps
each `overview` event into the page); /dashboard/payments/{id}/events: a payment's detail.

ONE task per process renders the overview for every open stream (LiveOverview): every second,
and at once on each paysched event of this process (workers running beside the API emit them
on `app.bus`), at most every MIN_GAP_S so that a burst of completions is one render. Each
stream sends every rendering it is given; an unchanged one as a comment, which costs a few
bytes and finds a client that went away at the next write. A stream ends when the server stops
(uvicorn's graceful shutdown waits for open responses, so an endless stream would hold
`paysched serve` for its whole grace time) and, with a `signed-out` event, as soon as the
session it was opened with is not signed in any more (signed out, expired, its key revoked):
that is checked before each rendering is sent, so a revoked key never sees the next one. The
page's script (static/dashboard.js) then goes to the sign-in page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from paysched.app import App
from paysched.db.store.base import short_error
from paysched.events import Event
from paysched.web.data import overview
from paysched.web.render import render

log = logging.getLogger("paysched.web")
EVERY_S = 1.0
MIN_GAP_S = 0.25
RETRY_MS = 2000  # how soon the browser reconnects after the stream ends


def sse(event: str, data: str) -> bytes:
    """One event; every line of `data` is a `data:` field (the client joins them with \\n)."""
    lines = "".join(f"data: {line}\n" for line in (data.splitlines() or [""]))
    return f"event: {event}\n{lines}\n".encode()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _pause(wake: asyncio.Event, stopping: asyncio.Event) -> None:
    """At least MIN_GAP_S (unless stopping), then until an event, stopping, or EVERY_S."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), MIN_GAP_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_first(wake, stopping), EVERY_S - MIN_GAP_S)


@contextlib.contextmanager
def _woken_by(app: App, wake: asyncio.Event, payment_id: int | None = None) -> Iterator[None]:
    """Meanwhile `wake` is set on each event of this process (of `payment_id` only, if given)."""
    loop = asyncio.get_running_loop()

    def on_event(event: Event) -> None:  # may be called from a worker's thread
        if payment_id is None or event.payment_id == payment_id:
            loop.call_soon_threadsafe(wake.set)

    unsubscribe = app.bus.subscribe(on_event)
    try:
        yield
    finally:
        unsubscribe()


async def _render(app: App) -> str:
    try:
        return render("_live.html", **await overview(app))
    except Exception as exc:  # Redis or the database away: say so, and try again next time
        log.warning("dashboard overview unavailable: %s", short_error(exc))
        return render("_unavailable.html", reason=short_error(exc))


class LiveOverview:
    """The overview as the live streams send it, rendered once per interval for all of them.

    Every open tab counted whole tables (occurrences and notifications by state, the queue)
    every second: ten tabs, ten times the work, for the same numbers. Now one task renders
    while at least one stream listens, and each stream waits for its next rendering; a stream
    that opens meanwhile starts with the latest one."""

    def __init__(self, app: App, stopping: asyncio.Event) -> None:
        self._app = app
        self._stopping = stopping
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None
        self._published = asyncio.Event()  # set, and replaced, at each rendering
        self.version = 0  # renderings so far
        self.html = ""

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """A stream listens meanwhile: the renderer runs while anyone does."""
        self._listeners += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-overview")
        try:
            yield
        finally:
            self._listeners -= 1
            if not self._listeners and self._task is not None:
                self._task.cancel()  # nobody to render for (its `finally` unsubscribes)
                self._task = None

    async def next(self, seen: int) -> tuple[int, str] | None:
        """The first rendering after version `seen` (at once if there is one already), as
        (version, html); None once the server stops."""
        while self.version <= seen:
            if self._stopping.is_set():
                return None
            await _first(self._published, self._stopping)
        return self.version, self.html

    async def _run(self) -> None:
        wake = asyncio.Event()
        with _woken_by(self._app, wake):
            while not self._stopping.is_set():
                wake.clear()
                html = await _render(self._app)
                self.version, self.html = self.version + 1, html
                published, self._published = self._published, asyncio.Event()
                published.set()
                await _pause(wake, self._stopping)


SIGNED_OUT = sse("signed-out", "")


async def _over(signed_in: Callable[[], Awaitable[bool]]) -> bytes | None:
    """None while the stream's session is signed in, else what to send as the stream ends:
    `signed-out`, or nothing when that cannot be told (the database away: the browser
    reconnects, and that request is checked again)."""
    try:
        return None if await signed_in() else SIGNED_OUT
    except Exception as exc:
        log.warning("dashboard session unchecked, stream ended: %s", short_error(exc))
        return b""


async def stream(
    live: LiveOverview, signed_in: Callable[[], Awaitable[bool]], stopping: asyncio.Event
) -> AsyncIterator[bytes]:
    with live.listening():
        yield f"retry: {RETRY_MS}\n\n".encode()
        last, seen = "", 0
        while (got := await live.next(seen)) is not None:
            if (last_words := await _over(signed_in)) is not None:  # about once a second
                yield last_words
                return
            seen, html = got
            yield sse("overview", html) if html != last else b": unchanged\n\n"
            last = html


async def payment_stream(
    app: App,
    payment_id: int,
    render_detail: Callable[[], Awaitable[str]],
    signed_in: Callable[[], Awaitable[bool]],
    stopping: asyncio.Event,
) -> AsyncIterator[bytes]:
    """A payment's detail as `payment` events: rendered every EVERY_S (a worker in another
    process emits nothing here) and at once on this process's events of that payment, sent
    when it changed.

    Rendered per stream rather than shared as the overview is: a payment's page is one person
    looking at one payment, its read (one payment, a page of occurrences) is indexed and
    small, and the cost stays one read a second per open payment page. The first rendering
    is always sent: the page may be older than the stream by a moment, and swapping in the
    same HTML is harmless."""
    wake = asyncio.Event()
    with _woken_by(app, wake, payment_id):
        yield f"retry: {RETRY_MS}\n\n".encode()
        last = ""
        while not stopping.is_set():
            wake.clear()
            if (last_words := await _over(signed_in)) is not None:
                yield last_words
                return
            try:
                html = await render_detail()
            except Exception as exc:  # Redis or the database away: keep what is shown
                log.warning("dashboard payment %d unavailable: %s", payment_id, short_error(exc))
                html = last
            yield sse("payment", html) if html != last else b": unchanged\n\n"
            last = html
            await _pause(wake, stopping)
