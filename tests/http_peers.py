"""Local HTTP peers for notification tests, on 127.0.0.1: a Bot API server that speaks
sendMessage's request and response format, and a webhook receiver that verifies signatures
on its own, as the README tells a receiver to (not with paysched's verify: a receiver that
shares paysched's code would accept whatever paysched got wrong)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs


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
                request = Request(
                    time.monotonic(), self.path, dict(self.headers.items()), self.rfile.read(length)
                )
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


TOLERANCE_S = 300  # README: a timestamp further than this from now is a replay


def signature_problem(secret: str, header: str, body: bytes, now: float) -> str | None:
    """What is wrong with `header` as the README's `t=<unix seconds>,v1=<hex>` signature of
    `body`, v1 = HMAC-SHA256(secret, "<t>." + body); None if nothing."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp, given = int(parts["t"]), parts["v1"]
    except (KeyError, ValueError):
        return "malformed signature header"
    if abs(now - timestamp) > TOLERANCE_S:
        return "timestamp outside the tolerance window"
    expected = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, given) else "signature mismatch"


def header(request: Request, name: str) -> str:
    """A request header by name, whatever its case on the wire."""
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), "")


@dataclass
class WebhookReceiver(Peer):
    """Accepts only correctly signed events (400 otherwise), and dedups on the event id."""

    secret: str = ""
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: int = 0

    def respond(self, request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        signature = header(request, "Paysched-Signature")
        problem = signature_problem(self.secret, signature, request.body, time.time())
        if problem is not None:
            self.rejected += 1
            return 400, {"error": problem}, {}
        if self.script:
            return self.script.pop(0)
        self.accepted.setdefault(header(request, "Paysched-Event-Id"), request.json())
        return 200, {"ok": True}, {}


class BotApi:
    """A local Bot API server for the bot's tests: the methods paysched's bot calls, over real
    HTTP, with their request formats (JSON, or form fields as python-telegram-bot sends them)
    and their response envelopes. Tests act as the people in the chats: `message` and `press`
    queue updates, which getUpdates hands out (long polling with offset and timeout, as
    Telegram does) unless a webhook is set."""

    def __init__(self, token: str, username: str = "paysched_test_bot") -> None:
        self.token = token
        self.username = username
        self.updates: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []  # sendMessage's parameters
        self.edited: list[dict[str, Any]] = []  # editMessageText's
        self.answered: list[dict[str, Any]] = []  # answerCallbackQuery's
        self.calls: list[str] = []  # every method called, in order
        self.webhook: dict[str, Any] | None = None
        self.polls: list[dict[str, Any]] = []  # getUpdates' parameters
        # Scripted error answers per method, each used once before the method works again.
        self.failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._next_update = 1000
        self._next_message = 1
        self._changed = threading.Condition()
        self._closed = False
        self._server: ThreadingHTTPServer | None = None

    # -- what people do ------------------------------------------------------------------------

    def message(self, chat_id: int, text: str) -> int:
        """A person writes `text` in chat `chat_id`: the update's id."""
        body: dict[str, Any] = {
            "message_id": self._message_id(),
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self._user(chat_id),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.inject({"message": body})

    def press(self, chat_id: int, data: str, message_id: int = 1, text: str = "…") -> int:
        """A person presses an inline keyboard's button under message `message_id`, which
        says `text`."""
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "text": text,
        }
        query = {
            "id": f"cq{self._next_update}",
            "from": self._user(chat_id),
            "chat_instance": str(chat_id),
            "data": data,
            "message": message,
        }
        return self.inject({"callback_query": query})

    def inject(self, update: dict[str, Any]) -> int:
        with self._changed:
            update_id = self._next_update
            self._next_update += 1
            self.updates.append({"update_id": update_id, **update})
            self._changed.notify_all()
        return update_id

    def update(self, update_id: int) -> dict[str, Any]:
        """An update as Telegram posts it to a webhook."""
        return next(u for u in self.updates if u["update_id"] == update_id)

    def texts(self, chat_id: int) -> list[str]:
        return [str(m["text"]) for m in self.sent if str(m["chat_id"]) == str(chat_id)]

    def _message_id(self) -> int:
        self._next_message += 1
        return self._next_message

    @staticmethod
    def _chat(chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "type": "private", "first_name": "Alice"}

    @staticmethod
    def _user(chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "is_bot": False, "first_name": "Alice"}

    # -- the Bot API ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return self._call(method, params)
        finally:
            with self._changed:  # whoever waits on what the bot did looks again
                self._changed.notify_all()

    def _call(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append(method)
        if self.failures.get(method):
            return self.failures[method].pop(0)
        if method == "getMe":
            return _ok(
                {"id": 123456, "is_bot": True, "first_name": "paysched", "username": self.username}
            )
        if method == "getUpdates":
            return self._get_updates(params)
        if method == "setWebhook":
            self.webhook = {"url": params["url"], "secret_token": params.get("secret_token")}
            return _ok(True)
        if method == "deleteWebhook":
            self.webhook = None
            return _ok(True)
        if method == "sendMessage":
            with self._changed:
                self.sent.append(params)
                self._changed.notify_all()
            return _ok(self._sent_message(params))
        if method == "editMessageText":
            self.edited.append(params)
            return _ok(self._sent_message(params))
        if method == "answerCallbackQuery":
            with self._changed:
                self.answered.append(params)
                self._changed.notify_all()
            return _ok(True)
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    def _sent_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = int(params["chat_id"])
        message: dict[str, Any] = {
            "message_id": int(params.get("message_id") or self._message_id()),
            "date": int(time.time()),
            "chat": self._chat(chat),
            "text": params["text"],
        }
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        return message

    def _get_updates(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.webhook is not None:
            return 409, {
                "ok": False,
                "error_code": 409,
                "description": "Conflict: can't use "
                "getUpdates method while webhook is active; use deleteWebhook to "
                "delete the webhook first",
            }
        self.polls.append(params)
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        with self._changed:
            # An offset confirms every update before it: Telegram forgets them.
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while not self.updates and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return _ok(list(self.updates))

    def wait(self, predicate: Any, timeout: float = 20.0) -> None:
        """Until `predicate()` holds (checked after each call of the bot's)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the bot did not answer in time")
                self._changed.wait(left)

    # -- serving -------------------------------------------------------------------------------

    def start(self) -> Self:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                _, _, rest = self.path.partition("/bot")
                token, _, method = rest.partition("/")
                if token != api.token:
                    status, body = (
                        401,
                        {"ok": False, "error_code": 401, "description": "Unauthorized"},
                    )
                else:
                    status, body = api.call(method, _params(self.headers, raw))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"


def _ok(result: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"ok": True, "result": result}


def _params(headers: Any, raw: bytes) -> dict[str, Any]:
    """A Bot API request's parameters: a JSON body, or form fields whose structured values
    (reply_markup, allowed_updates) are JSON, as the Bot API accepts both."""
    kind = headers.get("Content-Type", "")
    if not raw:
        return {}
    if kind.startswith("application/json"):
        return dict(json.loads(raw))
    params: dict[str, Any] = {}
    for key, values in parse_qs(raw.decode(), keep_blank_values=True).items():
        value: Any = values[-1]
        if key in ("reply_markup", "allowed_updates"):
            value = json.loads(value)
        params[key] = value
    return params
