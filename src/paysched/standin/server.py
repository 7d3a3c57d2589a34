"""The stand-in provider's HTTP server (stdlib only): the contract of
`paysched.executors.http`, plus a few endpoints for tests and the chaos harness.

Endpoints:

- ``POST /payments``: needs ``Idempotency-Key`` (400 without) and, when the provider has a
  token, ``Authorization: Bearer <token>`` (401 otherwise); a bad body is a 400 whose
  ``reason`` names the field. The same key and body again answer the stored charge (200); the
  same key with another body is a 422; the same key while its first request is still being
  processed is a 409. Fault modes (`paysched.standin.faults`) apply here.
- ``GET /payments/{key}``: 200 with the stored charge; 409 while its first POST is still being
  processed and nothing is committed yet (404, with ``in_flight_lookup=404``: a provider that
  records a charge only when it commits); 404 when the provider never received it. A pending
  charge settles once its time has passed (checked on read). ``lookup_error`` answers 503.
- ``GET /payments?created_from=&created_to=&cursor=&limit=``: the listing (ISO 8601 times,
  ``limit`` 1-1000, default 100): ``{"data": [charges], "next_cursor": "..." | null}``; a bad
  parameter is a 400 naming it. Fault modes do not apply to it.
- ``GET /_charges``: every charge, every column, as a JSON list.
- ``GET /_faults``, ``POST /_faults``: read or change the fault configuration
  (see `Faults.update`).
- ``POST /_accounts`` ``{"name": "alice", "balance": "100.00"}`` (``null``: unlimited, the
  default); ``GET /_accounts/{name}``. A charge that would overdraw a balance is declined.

The admin endpoints (``/_...``) take no token: the stand-in is a test double on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from paysched.standin.faults import DELIVERY_MODES, Faults, Mode
from paysched.standin.ledger import (
    DECLINED,
    PENDING,
    SUCCEEDED,
    Charge,
    ChargeRequest,
    Ledger,
    utc_now,
)

log = logging.getLogger("paysched.standin")

MAX_BODY = 64 * 1024
MAX_TEXT = 200
_AMOUNT_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")

JSON = dict[str, Any] | list[Any]


class StandinProvider:
    """A stand-in payment provider on 127.0.0.1, serving from a background thread.

    >>> with StandinProvider(token="t") as provider:   # doctest: +SKIP
    ...     provider.url                                # 'http://127.0.0.1:PORT'
    """

    def __init__(
        self,
        db: str | Path | None = None,
        *,
        token: str = "",
        seed: int | str = 0,
        rates: Mapping[str, float] | None = None,
        hang_s: float = 3.0,
        slow_s: float = 0.3,
        settle_s: float = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] = utc_now,
        in_flight_lookup: int = 409,
    ) -> None:
        self.ledger = Ledger(db, clock=clock)
        self._in_flight_lookup = in_flight_lookup
        self.faults = Faults(seed, rates, hang_s=hang_s, slow_s=slow_s, settle_s=settle_s)
        self._token = token
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._state = threading.Condition()
        self._in_flight: set[str] = set()
        self._active = 0  # requests being handled
        self._connections: set[socket.socket] = set()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Listen and serve in a background thread; the base URL."""
        if self._stopping.is_set():
            raise RuntimeError("a stopped StandinProvider cannot start again; make a new one")
        if self._server is None:
            self._server = _Server((self._host, self._port), _Handler, self)
            # A short poll interval: stop() (shutdown) waits for one, and tests stop often.
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="standin", daemon=True
            )
            self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the provider is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving: hung requests wake up, open connections close, the ledger closes."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            with self._state:
                connections = list(self._connections)
            for conn in connections:  # idle keep-alive connections would outlive the server
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.wait_idle(5.0)
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5.0)
        self.ledger.close()

    def serve_forever(self) -> None:
        """Serve until interrupted (KeyboardInterrupt, or SystemExit raised by a signal
        handler), then stop."""
        self.start()
        try:
            # join with a timeout: signal handlers run in the main thread between waits.
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> StandinProvider:
        try:
            self.start()
        except BaseException:
            self.stop()  # __exit__ will not run: close the ledger (and its temp dir) here
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for tests and the chaos harness -----------------------------------------------------

    def charges(self) -> list[Charge]:
        return self.ledger.charges()

    def set_balance(self, name: str, balance: Decimal | str | None) -> None:
        self.ledger.set_balance(name, balance)

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        """Like POST /_faults (see `Faults.update`)."""
        self.faults.update(spec)

    def in_flight(self) -> frozenset[str]:
        """Keys whose POST is being processed right now."""
        with self._state:
            return frozenset(self._in_flight)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being handled (hung ones included); False on timeout."""
        with self._state:
            return self._state.wait_for(lambda: self._active == 0, timeout)

    # -- request handling (called from handler threads) --------------------------------------

    def _handle(self, h: _Handler, method: str) -> None:
        with self._state:
            self._active += 1
        try:
            if self._stopping.is_set():
                h.close_connection = True  # going away: answer nothing, as a dead server
                return
            self._route(h, method)
        except Exception:
            log.exception("stand-in failed handling %s %s", method, h.path)
            h.send_json(500, {"reason": "stand-in internal error"})
        finally:
            with self._state:
                self._active -= 1
                self._state.notify_all()

    def _route(self, h: _Handler, method: str) -> None:
        path = urlsplit(h.path).path
        body = h.read_body()
        if body is None:
            return
        if method == "POST" and path == "/payments":
            self._post_payment(h, body)
        elif method == "GET" and path == "/payments":
            self._list_payments(h, urlsplit(h.path).query)
        elif method == "GET" and path.startswith("/payments/"):
            self._get_payment(h, unquote(path[len("/payments/") :]))
        elif method == "GET" and path == "/_charges":
            h.send_json(200, [c.row() for c in self.ledger.charges()])
        elif path == "/_faults" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    self.faults.update(_object(body))
                except ValueError as exc:
                    h.send_json(400, {"reason": str(exc)})
                    return
            h.send_json(200, self.faults.snapshot())
        elif method == "POST" and path == "/_accounts":
            self._post_account(h, body)
        elif method == "GET" and path.startswith("/_accounts/"):
            name = unquote(path[len("/_accounts/") :])
            balance = self.ledger.balance(name)
            h.send_json(200, {"name": name, "balance": None if balance is None else str(balance)})
        else:
            h.send_json(404, {"reason": f"no endpoint {method} {path}"})

    def _authorized(self, h: _Handler) -> bool:
        if not self._token:
            return True
        given = h.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode())

    def _post_payment(self, h: _Handler, raw: bytes) -> None:
        if not self._authorized(h):
            h.send_json(401, {"reason": "missing or wrong bearer token"})
            return
        key = h.headers.get("Idempotency-Key", "").strip()
        if not key or len(key) > 255:
            h.send_json(400, {"reason": "Idempotency-Key: header required, 1-255 characters"})
            return
        try:
            request = parse_request(raw)
        except ValueError as exc:
            h.send_json(400, {"reason": str(exc)})
            return
        with self._state:
            if key in self._in_flight:
                busy = True
            else:
                busy = False
                self._in_flight.add(key)
        if busy:
            h.send_json(409, {"reason": "a request with this Idempotency-Key is in progress"})
            return
        try:
            self._charge(h, key, request)
        finally:
            with self._state:
                self._in_flight.discard(key)

    def _charge(self, h: _Handler, key: str, request: ChargeRequest) -> None:
        existing = self.ledger.get(key)
        if existing is not None and existing.fingerprint != request.fingerprint:
            h.send_json(422, {"reason": "Idempotency-Key already used with another request body"})
            return
        draw = self.faults.for_post(key)
        if existing is not None:
            # A replay answers the stored charge; only faults of delivery apply to it.
            mode = draw.mode if draw.mode in DELIVERY_MODES else Mode.NONE
            if mode is Mode.SLOW:
                self._sleep(self.faults.slow_s)
            self._deliver(h, mode, existing)
            return
        mode = draw.mode
        if mode is Mode.SLOW:
            self._sleep(self.faults.slow_s)
        if mode is Mode.TIMEOUT_BEFORE:
            self._deliver(h, mode, None)
            return
        status = {Mode.DECLINE: DECLINED, Mode.PENDING: PENDING}.get(mode, SUCCEEDED)
        charge, _ = self.ledger.commit(
            key,
            request,
            status=status,
            reason="declined by stand-in (injected)" if mode is Mode.DECLINE else None,
            settle_s=self.faults.settle_s,
            settle_to=draw.settle_to,
        )
        self._deliver(h, mode, charge)

    def _deliver(self, h: _Handler, mode: Mode, charge: Charge | None) -> None:
        if mode is Mode.TIMEOUT_BEFORE or charge is None:
            self._sleep(self.faults.hang_s)
            # The client has normally given up by now; a patient one learns nothing was done.
            h.send_json(503, {"reason": "stand-in timed out before committing (injected)"})
        elif mode is Mode.TIMEOUT_AFTER:
            self._sleep(self.faults.hang_s)
            h.send_json(200, charge.body())
        elif mode is Mode.ERROR_AFTER:
            h.send_json(500, {"reason": "stand-in failed after committing (injected)"})
        elif mode is Mode.DROP_AFTER:
            h.close_connection = True  # nothing written: the client sees the socket close
        else:
            h.send_json(200, charge.body())

    def _get_payment(self, h: _Handler, key: str) -> None:
        if not self._authorized(h):
            h.send_json(401, {"reason": "missing or wrong bearer token"})
            return
        if self.faults.for_get(key):
            h.send_json(503, {"reason": "stand-in lookup unavailable (injected)"})
            return
        charge = self.ledger.get(key)
        if charge is not None:
            h.send_json(200, charge.body())
        elif key in self.in_flight() and self._in_flight_lookup == 409:
            # Received but not decided: "never received" (404) would be a lie; some providers
            # tell it all the same (in_flight_lookup=404), and paysched must not believe it.
            h.send_json(409, {"reason": "a request with this Idempotency-Key is in progress"})
        else:
            h.send_json(404, {"reason": "no payment with this Idempotency-Key"})

    def _list_payments(self, h: _Handler, query: str) -> None:
        if not self._authorized(h):
            h.send_json(401, {"reason": "missing or wrong bearer token"})
            return
        try:
            created_from, created_to, after, limit = _listing_params(parse_qs(query))
        except ValueError as exc:
            h.send_json(400, {"reason": str(exc)})
            return
        charges = self.ledger.page(created_from, created_to, after, limit + 1)
        more = len(charges) > limit
        charges = charges[:limit]
        cursor = charges[-1].position() if more else None
        h.send_json(200, {"data": [c.body() for c in charges], "next_cursor": cursor})

    def _post_account(self, h: _Handler, raw: bytes) -> None:
        try:
            body = _object(raw)
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError("name: expected a non-empty string")
            balance = body.get("balance")
            if balance is not None and not isinstance(balance, str):
                raise ValueError('balance: expected a decimal string like "100.00", or null')
            self.ledger.set_balance(name, balance)
        except ValueError as exc:
            h.send_json(400, {"reason": str(exc)})
            return
        stored = self.ledger.balance(name)
        h.send_json(200, {"name": name, "balance": None if stored is None else str(stored)})

    def _sleep(self, seconds: float) -> None:
        # Wakes early when the provider stops, so stop() never waits out a hang.
        self._stopping.wait(seconds)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._state:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def parse_request(raw: bytes) -> ChargeRequest:
    """A POST /payments body, validated; ValueError naming the field otherwise."""
    body = _object(raw)
    amount = body.get("amount")
    if not isinstance(amount, str) or not _AMOUNT_RE.match(amount):
        raise ValueError('amount: expected a positive decimal string like "12.34"')
    try:
        if Decimal(amount) <= 0:
            raise ValueError('amount: expected a positive decimal string like "12.34"')
    except InvalidOperation:
        raise ValueError('amount: expected a positive decimal string like "12.34"') from None
    currency = body.get("currency")
    if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
        raise ValueError("currency: expected a 3-letter ISO 4217 code like USD")
    texts: dict[str, str] = {}
    for field in ("from", "to", "reference"):
        value = body.get(field)
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            raise ValueError(f"{field}: expected a non-empty string of at most {MAX_TEXT} chars")
        texts[field] = value
    return ChargeRequest(amount, currency, texts["from"], texts["to"], texts["reference"])


def _listing_params(
    query: dict[str, list[str]],
) -> tuple[datetime, datetime, tuple[str, str] | None, int]:
    """created_from, created_to, the cursor's position and the limit of a listing request."""
    times = []
    for field in ("created_from", "created_to"):
        value = (query.get(field) or [""])[0]
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{field}: expected an ISO 8601 time with a UTC offset") from None
        if at.tzinfo is None:
            raise ValueError(f"{field}: expected an ISO 8601 time with a UTC offset")
        times.append(at)
    cursor = (query.get("cursor") or [""])[0]
    after = None
    if cursor:
        created, sep, key = cursor.partition("|")
        if not sep or not key:
            raise ValueError("cursor: not a cursor this provider gave")
        after = (created, key)
    raw_limit = (query.get("limit") or ["100"])[0]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise ValueError("limit: expected 1-1000")
    return times[0], times[1], after, int(raw_limit)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body: expected a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: 50 workers connecting at once overflowed it
    # and were reset (ConnectionResetError on both sides), which a real provider never does.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        provider: StandinProvider,
    ) -> None:
        self.provider = provider
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real provider
    server_version = "paysched-standin"
    timeout = 60  # an idle keep-alive connection's thread ends after this
    # Headers and body go out in two writes; with Nagle on, a keep-alive client waits ~40 ms
    # for a delayed ACK on each answer.
    disable_nagle_algorithm = True

    @property
    def provider(self) -> StandinProvider:
        return cast(_Server, self.server).provider

    def setup(self) -> None:
        super().setup()
        self.provider._track(self.connection, add=True)

    def finish(self) -> None:
        self.provider._track(self.connection, add=False)
        with contextlib.suppress(OSError):  # the client went away
            super().finish()

    def do_GET(self) -> None:
        self.provider._handle(self, "GET")

    def do_POST(self) -> None:
        self.provider._handle(self, "POST")

    def read_body(self) -> bytes | None:
        """The request body; None (after answering 413) when it is too large."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_json(400, {"reason": "Content-Length: expected a number of bytes"})
            self.close_connection = True
            return None
        if length > MAX_BODY:
            self.send_json(413, {"reason": f"body: larger than {MAX_BODY} bytes"})
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, status: int, body: JSON) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            # The client gave up (it timed out on a hang): nothing to tell it any more.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only (method, path, status): never headers, so never the token.
        log.debug("%s %s", self.address_string(), format % args)
