"""HttpExecutor against real sockets: the stand-in provider for every outcome it can produce,
and a small scripted peer for the answers the stand-in never gives (429, odd bodies, ...)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from paysched.executors.base import (
    Closable,
    ExecutionResult,
    Outcome,
    PaymentOrder,
    Resolvable,
)
from paysched.executors.http import HttpExecutor
from paysched.redis_server import free_port
from paysched.standin import Charge, StandinProvider
from tests.conftest import wait_for

TOKEN = f"tok-{secrets.token_hex(16)}"
WRONG_TOKEN = f"wrong-{secrets.token_hex(16)}"
READ_TIMEOUT_S = 0.3  # the client's read timeout
HANG_S = 0.8  # the provider's timeout_before/after sleep: well past READ_TIMEOUT_S
SLOW_S = 0.1  # well under READ_TIMEOUT_S
SETTLE_S = 0.8


def make_order(
    key: str | None = None,
    amount: int = 1234,
    currency: str = "USD",
    payer: str = "alice",
    payee: str = "bob",
) -> PaymentOrder:
    """An order as the worker builds it, without the database: HttpExecutor needs none."""
    return PaymentOrder(
        idempotency_key=key or f"pay-1-{uuid.uuid4().int % 10**13}",
        payment_id=1,
        amount=amount,
        currency=currency,
        payer=payer,
        payee=payee,
        memo="",
        due_at=datetime.now(UTC),
        attempt=1,
    )


def charges_for(provider: StandinProvider, key: str) -> list[Charge]:
    return [c for c in provider.charges() if c.key == key]


async def idle(provider: StandinProvider) -> None:
    """Wait until the provider has finished every request (hung ones included)."""
    assert await asyncio.to_thread(provider.wait_idle, 10.0), "provider still busy after 10 s"


@pytest.fixture
def provider(tmp_path: Any) -> Iterator[StandinProvider]:
    with StandinProvider(
        tmp_path / "standin.db", token=TOKEN, hang_s=HANG_S, slow_s=SLOW_S, settle_s=SETTLE_S
    ) as p:
        yield p


def client(url: str, token: str = TOKEN, read_timeout_s: float = READ_TIMEOUT_S) -> HttpExecutor:
    return HttpExecutor(url, token, connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


@pytest.fixture
async def executor(provider: StandinProvider) -> AsyncIterator[HttpExecutor]:
    ex = client(provider.url)
    yield ex
    await ex.aclose()


# -- the stand-in provider -------------------------------------------------------------------


def test_implements_the_protocols() -> None:
    ex = HttpExecutor("http://127.0.0.1:1", "")
    assert ex.name == "http"
    assert isinstance(ex, Resolvable)
    assert isinstance(ex, Closable)


@pytest.mark.parametrize(
    ("amount", "currency", "decimal"),
    [(1234, "USD", "12.34"), (1234, "JPY", "1234"), (1234, "KWD", "1.234"), (5, "EUR", "0.05")],
)
async def test_succeeded(
    provider: StandinProvider, executor: HttpExecutor, amount: int, currency: str, decimal: str
) -> None:
    order = make_order(amount=amount, currency=currency)
    key = order.idempotency_key

    result = await executor.execute(order)

    [charge] = provider.charges()
    assert result == ExecutionResult.succeeded(reference=charge.id)
    assert (charge.key, charge.reference, charge.status) == (key, key, "succeeded")
    assert (charge.amount, charge.currency) == (decimal, currency)
    assert (charge.payer, charge.payee) == ("alice", "bob")
    assert await executor.lookup(order) == ExecutionResult.succeeded(reference=charge.id)


async def test_declined(provider: StandinProvider, executor: HttpExecutor) -> None:
    order = make_order()
    key = order.idempotency_key
    provider.set_faults({"keys": {key: "decline"}})

    result = await executor.execute(order)

    [charge] = provider.charges()
    expected = ExecutionResult.declined("declined by stand-in (injected)", reference=charge.id)
    assert result == expected
    assert await executor.lookup(order) == expected
    # Sending again answers the stored decline; it does not turn into a charge.
    assert await executor.execute(order) == expected
    assert [c.status for c in provider.charges()] == ["declined"]


async def test_not_attempted_when_nothing_listens() -> None:
    ex = client(f"http://127.0.0.1:{free_port()}")
    try:
        order = make_order()
        result = await ex.execute(order)
        assert result.outcome is Outcome.NOT_ATTEMPTED
        assert result.reason is not None and result.reason.startswith("provider unreachable")
        # A lookup that cannot reach the provider knows nothing.
        looked = await ex.lookup(order)
        assert looked.outcome is Outcome.UNKNOWN
        assert looked.reason is not None and "ConnectError" in looked.reason
    finally:
        await ex.aclose()


async def test_timeout_before_commit_is_unknown_then_never_received(
    provider: StandinProvider, executor: HttpExecutor
) -> None:
    order = make_order()
    key = order.idempotency_key
    provider.set_faults({"keys": {key: "timeout_before"}})

    result = await executor.execute(order)
    assert result == ExecutionResult.unknown(f"no answer from provider within {READ_TIMEOUT_S} s")

    # The client gave up first: the provider is still holding the request (received, not
    # decided, so not "never received"), no wall-clock bound needed to show it.
    assert key in provider.in_flight()
    assert (await executor.lookup(order)).outcome is Outcome.UNKNOWN

    await idle(provider)
    assert provider.charges() == []
    assert await executor.lookup(order) == ExecutionResult.not_attempted(
        "provider never received it"
    )
    # Safe to send again with the same key: exactly one charge.
    again = await executor.execute(order)
    [charge] = charges_for(provider, key)
    assert again == ExecutionResult.succeeded(reference=charge.id)
    assert len(provider.charges()) == 1


async def test_timeout_after_commit_is_unknown_then_succeeded(
    provider: StandinProvider, executor: HttpExecutor
) -> None:
    order = make_order()
    key = order.idempotency_key
    provider.set_faults({"keys": {key: "timeout_after"}})

    result = await executor.execute(order)
    assert result.outcome is Outcome.UNKNOWN
    assert result.reason == f"no answer from provider within {READ_TIMEOUT_S} s"

    [charge] = provider.charges()
    assert charge.status == "succeeded"
    assert await executor.lookup(order) == ExecutionResult.succeeded(reference=charge.id)

    await idle(provider)
    replay = await executor.execute(order)
    assert replay == ExecutionResult.succeeded(reference=charge.id)
    assert provider.charges() == [charge]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error_after", "provider answered HTTP 500: stand-in failed after committing (injected)"),
        (
            "drop_after",
            "connection to provider dropped after sending: RemoteProtocolError: "
            "Server disconnected without sending a response.",
        ),
    ],
)
async def test_failure_after_commit_is_unknown_then_succeeded(
    provider: StandinProvider, executor: HttpExecutor, mode: str, reason: str
) -> None:
    order = make_order()
    key = order.idempotency_key
    provider.set_faults({"keys": {key: mode}})

    assert await executor.execute(order) == ExecutionResult.unknown(reason)

    [charge] = provider.charges()
    assert await executor.lookup(order) == ExecutionResult.succeeded(reference=charge.id)
    assert await executor.execute(order) == ExecutionResult.succeeded(reference=charge.id)
    assert len(provider.charges()) == 1


class StepClock:
    """The stand-in's clock, moved only by the test: settlement happens when the test says,
    however slow the machine is."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_pending_is_unknown_until_settled(tmp_path: Any) -> None:
    clock = StepClock()
    pending = "provider reports the payment pending"
    with StandinProvider(
        tmp_path / "standin.db", token=TOKEN, settle_s=SETTLE_S, clock=clock
    ) as provider:
        executor = client(provider.url)
        try:
            order = make_order()
            key = order.idempotency_key
            provider.set_faults({"keys": {key: "pending"}})

            result = await executor.execute(order)
            [charge] = provider.charges()
            assert result == ExecutionResult.unknown(pending, reference=charge.id)
            assert charge.settles_at == clock.now + timedelta(seconds=SETTLE_S)
            # Until the provider's clock reaches the settlement, every lookup says pending.
            assert await executor.lookup(order) == ExecutionResult.unknown(pending, charge.id)
            clock.now = charge.settles_at - timedelta(microseconds=1)
            assert await executor.lookup(order) == ExecutionResult.unknown(pending, charge.id)

            clock.now = charge.settles_at
            assert await executor.lookup(order) == ExecutionResult.succeeded(charge.id)
            assert [c.status for c in provider.charges()] == ["succeeded"]
        finally:
            await executor.aclose()


async def test_slow_is_succeeded(provider: StandinProvider, executor: HttpExecutor) -> None:
    order = make_order()
    key = order.idempotency_key
    provider.set_faults({"keys": {key: "slow"}})

    started = time.monotonic()
    result = await executor.execute(order)

    assert time.monotonic() - started >= SLOW_S
    [charge] = provider.charges()
    assert result == ExecutionResult.succeeded(reference=charge.id)


async def test_same_key_with_another_body_is_declined(
    provider: StandinProvider, executor: HttpExecutor
) -> None:
    order = make_order(amount=1234)
    key = order.idempotency_key
    assert (await executor.execute(order)).outcome is Outcome.SUCCEEDED

    result = await executor.execute(make_order(key=key, amount=9999))

    assert result == ExecutionResult.declined(
        "Idempotency-Key already used with another request body"
    )
    assert [c.amount for c in provider.charges()] == ["12.34"]


async def test_same_key_in_flight_is_unknown(
    provider: StandinProvider, executor: HttpExecutor
) -> None:
    order = make_order()
    key = order.idempotency_key
    provider.set_faults({"keys": {key: "timeout_after"}})
    patient = client(provider.url, read_timeout_s=HANG_S + 5)
    try:
        first = asyncio.create_task(patient.execute(order))

        async def in_flight() -> bool:
            return key in provider.in_flight()

        await wait_for(in_flight, 5, "the first request to reach the provider")
        second = await executor.execute(order)
        assert second == ExecutionResult.unknown(
            "provider is still processing this idempotency key (HTTP 409)"
        )
        [charge] = provider.charges()
        assert await first == ExecutionResult.succeeded(reference=charge.id)
        assert len(provider.charges()) == 1
    finally:
        await patient.aclose()


async def test_wrong_token_is_declined_and_no_token_ever_leaks(
    provider: StandinProvider, executor: HttpExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "paysched"):
        caplog.set_level(logging.DEBUG, logger=name)
    results: list[ExecutionResult] = []
    wrong = client(provider.url, token=WRONG_TOKEN)
    anonymous = client(provider.url, token="")
    try:
        order = make_order()
        key = order.idempotency_key
        for ex in (wrong, anonymous):
            result = await ex.execute(order)
            assert result == ExecutionResult.declined("missing or wrong bearer token")
            looked = await ex.lookup(order)
            assert looked.outcome is Outcome.UNKNOWN
            assert looked.reason is not None and "HTTP 401" in looked.reason
            results += [result, looked]
        assert provider.charges() == []

        # The right token, through success, a timeout, a drop and a failed lookup.
        results.append(await executor.execute(order))
        results.append(await executor.lookup(order))
        for mode in ("timeout_before", "drop_after"):
            other = make_order()
            provider.set_faults({"keys": {other.idempotency_key: mode}})
            results.append(await executor.execute(other))
        provider.set_faults({"keys": {key: "lookup_error"}})
        results.append(await executor.lookup(order))
    finally:
        await wrong.aclose()
        await anonymous.aclose()

    assert {r.outcome for r in results} == {Outcome.DECLINED, Outcome.UNKNOWN, Outcome.SUCCEEDED}
    texts = [f"{r.reason} {r.reference}" for r in results]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)
    # The capture really saw httpx's request lines (else this test could not fail).
    assert any(r.name == "httpx" and "POST" in r.getMessage() for r in caplog.records)
    for text in texts:
        assert TOKEN not in text
        assert WRONG_TOKEN not in text


async def test_lookup_error_is_unknown(provider: StandinProvider, executor: HttpExecutor) -> None:
    order = make_order()
    key = order.idempotency_key
    assert (await executor.execute(order)).outcome is Outcome.SUCCEEDED
    provider.set_faults({"keys": {key: "lookup_error"}})

    assert await executor.lookup(order) == ExecutionResult.unknown(
        "lookup failed: provider answered HTTP 503: stand-in lookup unavailable (injected)"
    )
    # The fault was one-shot: the resolver's next try gets the answer.
    [charge] = provider.charges()
    assert await executor.lookup(order) == ExecutionResult.succeeded(reference=charge.id)


async def test_insufficient_balance_is_declined(
    provider: StandinProvider, executor: HttpExecutor
) -> None:
    provider.set_balance("alice", "10.00")
    order = make_order(amount=1234)

    result = await executor.execute(order)

    [charge] = provider.charges()
    assert result == ExecutionResult.declined(
        "insufficient balance in alice: 10.00 available, 12.34 needed", reference=charge.id
    )
    assert str(provider.ledger.balance("alice")) == "10.00"
    smaller = make_order(amount=500)
    assert (await executor.execute(smaller)).outcome is Outcome.SUCCEEDED
    assert str(provider.ledger.balance("alice")) == "5.00"


# -- a scripted peer for the answers the stand-in never gives --------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedPeer:
    """Answers every request with `status` and the raw `body`, and records the requests."""

    status: int = 200
    body: bytes = b"{}"
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> ScriptedPeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                peer.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                self.send_response(peer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(peer.body)))
                self.end_headers()
                self.wfile.write(peer.body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def peer() -> Iterator[ScriptedPeer]:
    p = ScriptedPeer().start()
    yield p
    p.stop()


def _body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


LONG = "x" * 1000

EXECUTE_CASES: list[tuple[int, Any, ExecutionResult]] = [
    (200, {"id": "p1", "status": "succeeded"}, ExecutionResult.succeeded("p1")),
    (
        201,
        {"id": "p1", "status": "declined", "reason": "card expired"},
        ExecutionResult.declined("card expired", "p1"),
    ),
    (
        200,
        {"id": "p1", "status": "declined"},
        ExecutionResult.declined("declined by provider", "p1"),
    ),
    (
        202,
        {"id": "p1", "status": "pending"},
        ExecutionResult.unknown("provider reports the payment pending", "p1"),
    ),
    (
        200,
        b"<html>ok</html>",
        ExecutionResult.unknown("provider answered HTTP 200 with a body that is not JSON"),
    ),
    (200, [1, 2], ExecutionResult.unknown("provider's answer is not a JSON object")),
    (200, {"status": "succeeded"}, ExecutionResult.unknown("provider's answer has no payment id")),
    (
        200,
        {"id": "p1", "status": "done"},
        ExecutionResult.unknown("provider answered an unknown status 'done'", "p1"),
    ),
    (
        200,
        {"id": "p1", "status": "succeeded", "reference": "pay-9-9"},
        ExecutionResult.unknown("provider's answer names another payment"),
    ),
    (
        409,
        {"reason": "busy"},
        ExecutionResult.unknown("provider is still processing this idempotency key (HTTP 409)"),
    ),
    (
        429,
        {"reason": "slow down"},
        ExecutionResult.not_attempted("provider rate-limited the request (HTTP 429)"),
    ),
    (408, b"", ExecutionResult.unknown("provider timed out reading the request (HTTP 408)")),
    (400, {"detail": "bad\n  iban"}, ExecutionResult.declined("bad iban")),
    (403, {"error": "forbidden"}, ExecutionResult.declined("forbidden")),
    (402, {"error": {"message": "card declined"}}, ExecutionResult.declined("card declined")),
    (422, {"message": "amount too large"}, ExecutionResult.declined("amount too large")),
    (404, b"", ExecutionResult.declined("provider answered HTTP 404")),
    (400, {"reason": LONG}, ExecutionResult.declined("x" * 299 + "…")),
    (
        400,
        {"reason": f"token {TOKEN} is not valid"},
        ExecutionResult.declined("token *** is not valid"),
    ),
    (500, {"reason": "boom"}, ExecutionResult.unknown("provider answered HTTP 500: boom")),
    (503, b"", ExecutionResult.unknown("provider answered HTTP 503")),
    (302, b"", ExecutionResult.unknown("provider answered HTTP 302")),
]


@pytest.mark.parametrize(("status", "body", "expected"), EXECUTE_CASES)
async def test_execute_mapping(
    peer: ScriptedPeer, status: int, body: Any, expected: ExecutionResult
) -> None:
    peer.status, peer.body = status, _body(body)
    ex = client(peer.url)
    try:
        order = make_order(key="pay-7-1700000000000")
        result = await ex.execute(order)
    finally:
        await ex.aclose()
    assert result == expected
    assert result.reason is None or len(result.reason) <= 300


LOOKUP_CASES: list[tuple[int, Any, ExecutionResult]] = [
    (200, {"id": "p1", "status": "succeeded"}, ExecutionResult.succeeded("p1")),
    (
        200,
        {"id": "p1", "status": "declined", "reason": "no funds"},
        ExecutionResult.declined("no funds", "p1"),
    ),
    (
        200,
        {"id": "p1", "status": "pending"},
        ExecutionResult.unknown("provider reports the payment pending", "p1"),
    ),
    (
        200,
        b"not json",
        ExecutionResult.unknown("provider answered HTTP 200 with a body that is not JSON"),
    ),
    (404, {"reason": "not found"}, ExecutionResult.not_attempted("provider never received it")),
    (500, b"", ExecutionResult.unknown("lookup failed: provider answered HTTP 500")),
    (
        401,
        {"reason": f"bad token {TOKEN}"},
        ExecutionResult.unknown("lookup failed: provider answered HTTP 401: bad token ***"),
    ),
]


@pytest.mark.parametrize(("status", "body", "expected"), LOOKUP_CASES)
async def test_lookup_mapping(
    peer: ScriptedPeer, status: int, body: Any, expected: ExecutionResult
) -> None:
    peer.status, peer.body = status, _body(body)
    ex = client(peer.url)
    try:
        order = make_order()
        assert await ex.lookup(order) == expected
    finally:
        await ex.aclose()


async def test_request_shape(peer: ScriptedPeer) -> None:
    peer.body = _body({"id": "p1", "status": "succeeded"})
    ex = client(f"{peer.url}/v1/", token=TOKEN)
    anonymous = client(peer.url, token="")
    try:
        order = make_order(key="pay-3-1700000000000", amount=120050, payer="ann", payee="bo b")
        await ex.execute(order)
        await ex.lookup(replace(order, idempotency_key="odd/key with space"))
        await anonymous.execute(order)
    finally:
        await ex.aclose()
        await anonymous.aclose()

    post, get, anon = peer.seen
    assert (post.method, post.path) == ("POST", "/v1/payments")
    assert post.headers["Idempotency-Key"] == "pay-3-1700000000000"
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(post.body) == {
        "amount": "1200.50",
        "currency": "USD",
        "from": "ann",
        "to": "bo b",
        "reference": "pay-3-1700000000000",
    }
    assert (get.method, get.path) == ("GET", "/v1/payments/odd%2Fkey%20with%20space")
    assert get.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in anon.headers


@pytest.mark.parametrize(
    "url",
    ["http://user:secret@127.0.0.1:1", "http://127.0.0.1:1/?token=abc", "ftp://127.0.0.1", "x"],
)
def test_rejects_unsafe_base_urls(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        HttpExecutor(url, TOKEN)


@pytest.mark.parametrize("token", ["with space", "new\nline", "caf\u00e9"])
def test_rejects_tokens_that_cannot_be_sent(token: str) -> None:
    with pytest.raises(ValueError, match="token") as raised:
        HttpExecutor("http://127.0.0.1:1", token)
    assert token not in str(raised.value)


class CountingProvider:
    """A provider that answers every charge `succeeded` once `hold` of them are in flight
    (so they must all be in flight at once), counting the TCP connections it accepted."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.connections = 0
        self.in_flight = 0
        self.all_in = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                key = json.loads(await reader.readexactly(length))["reference"]
                self.in_flight += 1
                if self.in_flight >= self.hold:
                    self.all_in.set()
                await asyncio.wait_for(self.all_in.wait(), 10)
                self.in_flight -= 1
                if self.in_flight == 0:
                    self.all_in.clear()
                body = json.dumps({"id": f"c-{key}", "status": "succeeded", "reference": key})
                head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body.encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_every_job_at_once_gets_a_connection_and_keeps_it() -> None:
    """With `connections` = the concurrency, that many charges reach the provider at once, and
    a second round reuses the same connections: httpx keeps only 20 alive by default, so at
    concurrency 30 a third of the charges opened (and closed) a connection of their own."""
    jobs = 30
    provider = CountingProvider(hold=jobs)
    server = await asyncio.start_server(provider.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    executor = HttpExecutor(f"http://127.0.0.1:{port}", "", connections=jobs)
    try:
        for _ in range(2):
            results = await asyncio.wait_for(
                asyncio.gather(
                    *[executor.execute(make_order(key=f"pay-{i}-1")) for i in range(jobs)]
                ),
                20,
            )
            assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
        assert provider.connections == jobs
    finally:
        await executor.aclose()
        server.close()
        await server.wait_closed()
