"""Serving the API with uvicorn inside paysched's own event loop and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from paysched.api.app import create_api
from paysched.app import App
from paysched.errors import ConfigError

log = logging.getLogger("paysched.api")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Every request's line and headers fit in one or two packets; a client slower than this is
# holding a connection, not sending a request.
HEADER_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    # paysched's CLI owns SIGTERM/SIGINT (it stops the workers gracefully too) and tells the
    # server to exit; uvicorn's own handlers would take the signals from it.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a bound on the time a request's headers may take.

    uvicorn closes an idle connection only after a response (timeout_keep_alive), and forgets
    that timer at the next byte: a client that connected and sent nothing, or a request line
    and then a header now and then, held its connection (and a file descriptor) for ever.
    Here the headers must be complete within `header_timeout` seconds of the connection, or
    of the first byte of the next request on it, or the connection is closed."""

    header_timeout = HEADER_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request's headers are all here
            self._disarm()
        elif self._deadline is None:  # a request has begun: its headers are on the clock
            self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def parse_address(text: str, field: str = "--api") -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'PORT' -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(field, f"expected HOST:PORT with a port 0-65535, got {text!r}")
    return host, int(port)


def listen(host: str, port: int) -> socket.socket:
    """Bind now, so that a taken port is a one-line error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Named as TCP, so that asyncio sets TCP_NODELAY on every accepted connection: without
    # it, a response written as headers then body waited ~40 ms for the client's delayed ACK
    # (Nagle), which capped one client at ~20 requests/s (found by bench/measure_api.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("--port", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def serve(
    app: App, sock: socket.socket, stop: asyncio.Event, header_timeout: float = HEADER_TIMEOUT_S
) -> None:
    """Answer HTTP on `sock` until `stop` is set, then finish the requests in progress.
    A connection whose request headers take longer than `header_timeout` s is closed."""
    protocol = type("HeaderDeadline", (_HeaderDeadline,), {"header_timeout": header_timeout})
    config = uvicorn.Config(
        create_api(app, stop),
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        http=protocol,
        # Requests in progress get the same grace after SIGTERM as payments in progress.
        timeout_graceful_shutdown=max(1, round(app.settings.shutdown_grace.total_seconds())),
    )
    server = _Server(config)
    host, port = sock.getsockname()[:2]
    log.info(
        "API listening on http://%s:%s (OpenAPI at /openapi.json, docs at /docs, "
        "dashboard at /dashboard/)",
        host,
        port,
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    beating = contextlib.AsyncExitStack()
    if app.heartbeat is not None:  # an API with a queue: say it is up (heartbeat.py)
        await beating.enter_async_context(app.heartbeat.beating({"api": lambda: not task.done()}))
    async with beating:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    # The server may also have ended on its own (a failed start-up): then the scheduler and
    # workers beside it stop too, gracefully, rather than run on with no API.
    stop.set()
    server.should_exit = True
    stopping.cancel()
    await task
