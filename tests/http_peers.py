"""Local HTTP peers for notification tests, on 127.0.0.1: a Bot API server that speaks
sendMessage's request and response format, and a webhook receiver that verifies signatures
with paysched's documented verifier."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from paysched.notify.webhook import EVENT_ID_HEADER, SIGNATURE_HEADER, SignatureError, verify


@dataclass
class Request:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Peer:
    """Answers each request with the next scripted (status, body, headers), then with `then`."""

    port: int = 0
    script: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    then: tuple[int, dict[str, Any], dict[str, str]] = (200, {"ok": True}, {})
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def respond(self, request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.script.pop(0) if self.script else self.then

    def start(self) -> Self:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = Request(time.monotonic(), self.path, dict(self.headers.items()),
                                  self.rfile.read(length))  # fmt: skip
                status, body, headers = peer.respond(request)
                peer.requests.append(request)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class WebhookReceiver(Peer):
    """Accepts only correctly signed events (400 otherwise), and dedups on the event id."""

    secret: str = ""
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: int = 0

    def respond(self, request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            verify(self.secret, request.headers.get(SIGNATURE_HEADER, ""), request.body)
        except SignatureError as exc:
            self.rejected += 1
            return 400, {"error": str(exc)}, {}
        if self.script:
            return self.script.pop(0)
        self.accepted.setdefault(request.headers[EVENT_ID_HEADER], request.json())
        return 200, {"ok": True}, {}
