"""Notification delivery against a local Bot API server and a signature-checking webhook."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paysched.actors import Actor
from paysched.app import App, build_registry
from paysched.clock import ManualClock
from paysched.config import Settings
from paysched.domain import OccurrenceState
from paysched.errors import PermanentDelivery, RetryableDelivery
from paysched.notify.delivery import Deliverer
from paysched.notify.webhook import EVENT_ID_HEADER, SIGNATURE_HEADER, WebhookNotifier
from paysched.redis_server import free_port
from tests.conftest import wait_for
from tests.http_peers import Peer, Request, WebhookReceiver
from tests.integration.helpers import all_final, fund, running

S = OccurrenceState
TOKEN = "123456:TEST-token"
SECRET = "whsec-test"


@pytest.fixture
def bot() -> Iterator[Peer]:
    peer = Peer().start()
    yield peer
    peer.stop()


@pytest.fixture
async def napp(env: dict[str, str], bot: Peer) -> AsyncIterator[App]:
    settings = Settings.from_env(
        env
        | {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": bot.url,
            "PAYSCHED_WEBHOOK_SECRET": SECRET,
            "PAYSCHED_NOTIFY_POLL": "100ms",
            "PAYSCHED_NOTIFY_EVENTS": "succeeded,failed",
            # The receivers listen on 127.0.0.1: a private address, allowed here.
            "PAYSCHED_WEBHOOK_ALLOW_PRIVATE": "1",
        }
    )
    app = await App.open(settings)
    assert app.deliverer is not None
    app.deliverer.backoff_base_s = 0.1  # keep the receiver-down test short
    yield app
    await app.close()


async def pay_notifying(app: App, amount: int, *targets: str) -> int:
    payment = await app.create_payment(
        actor=Actor.python(),
        payer="alice",
        payee="bob",
        amount=amount,
        currency="USD",
        due_at=app.clock.now(),
        cron=None,
        timezone=None,
        memo="",
        notify=list(targets),
    )
    return payment.id


async def states(app: App, pid: int) -> list[str]:
    assert app.outbox is not None
    return [n.state for n in await app.db(app.outbox.list, None, pid)]


async def test_delivered_once_per_target(napp: App, bot: Peer) -> None:
    hook = WebhookReceiver(secret=SECRET).start()
    try:
        await fund(napp, {"alice": 10_000, "bob": 0})
        pid = await pay_notifying(napp, 1234, "telegram:42", f"webhook:{hook.url}/events")
        async with running(napp):
            await all_final(napp, [pid])
            await wait_for(lambda: _all(napp, pid, "sent", 2), 15, "both notifications sent")
        (call,) = bot.requests
        assert call.path == f"/bot{TOKEN}/sendMessage"
        assert call.json()["chat_id"] == 42
        assert "12.34 USD from alice to bob succeeded" in call.json()["text"]
        assert len(hook.requests) == 1 and hook.rejected == 0
        ((event_id, event),) = hook.accepted.items()
        assert event["event"] == "payment.succeeded" and event["amount"] == "12.34"
        assert event_id.startswith(f"pay-{pid}-")
    finally:
        hook.stop()


async def test_receiver_down_then_up_delivers_exactly_once(napp: App) -> None:
    port = free_port()
    await fund(napp, {"alice": 10_000, "bob": 0})
    pid = await pay_notifying(napp, 500, f"webhook:http://127.0.0.1:{port}/hook")
    async with running(napp):
        (occ,) = await all_final(napp, [pid])
        assert occ.state == S.SUCCEEDED  # a failing channel never holds up the payment

        async def tried_twice() -> bool:
            assert napp.outbox is not None
            (n,) = await napp.db(napp.outbox.list, None, pid)
            return (
                n.attempts >= 2 and n.state == "pending" and "unreachable" in (n.last_error or "")
            )

        await wait_for(tried_twice, 15, "delivery to fail against the closed port")
        hook = WebhookReceiver(port=port, secret=SECRET).start()
        try:
            await wait_for(lambda: _all(napp, pid, "sent", 1), 15, "delivery after recovery")
        finally:
            hook.stop()
    assert len(hook.requests) == 1 and len(hook.accepted) == 1


async def test_telegram_429_retry_after_is_honoured(napp: App, bot: Peer) -> None:
    bot.script.append(
        (
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            },
            {},
        )
    )
    await fund(napp, {"alice": 10_000, "bob": 0})
    pid = await pay_notifying(napp, 500, "telegram:42")
    async with running(napp):
        await wait_for(lambda: _all(napp, pid, "sent", 1), 15, "delivery after the 429")
    first, second = bot.requests
    assert second.at - first.at >= 1.0  # not before Telegram said so
    assert len(bot.requests) == 2


async def test_permanent_error_ends_dead_with_reason(napp: App, bot: Peer) -> None:
    bot.then = (
        400,
        {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
        {},
    )
    await fund(napp, {"alice": 10_000, "bob": 0})
    pid = await pay_notifying(napp, 500, "telegram:7")
    async with running(napp):
        await wait_for(lambda: _all(napp, pid, "dead", 1), 15, "the notification to die")
    assert napp.outbox is not None
    (n,) = await napp.db(napp.outbox.list, "dead", pid)
    assert n.last_error == "telegram 400: Bad Request: chat not found"
    assert TOKEN not in (n.last_error or "")
    assert len(bot.requests) == 1  # not retried
    retried = await napp.db(napp.outbox.retry, n.id, napp.clock.now())
    assert retried.state == "pending" and retried.attempts == 0


async def test_failed_payment_notifies_reason_default_log_target(settings: Settings) -> None:
    app = await App.open(settings)  # nothing configured: the log channel
    try:
        await fund(app, {"alice": 100, "bob": 0})
        pid = await pay_notifying(app, 5_000)
        async with running(app):
            await all_final(app, [pid])
            await wait_for(lambda: _all(app, pid, "sent", 1), 15, "the log notification")
        assert app.outbox is not None
        (n,) = await app.db(app.outbox.list, None, pid)
        assert n.channel == "log" and n.event == "failed"
        assert "insufficient funds in 'alice'" in n.payload
    finally:
        await app.close()


async def _all(app: App, pid: int, state: str, count: int) -> bool:
    found = await states(app, pid)
    return len(found) == count and set(found) == {state}


async def test_the_readme_verifier_accepts_a_real_delivery() -> None:
    """The receiver-side snippet in README.md, run as written, against what paysched sends."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("**Verifying webhooks.**", 1)[1]
    snippet = section.split("```python", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    readme_verify = scope["verify"]

    receiver = Peer().start()
    notifier = WebhookNotifier("whsec-readme-check", allow_private=True)  # a local receiver
    try:
        await notifier.send(f"{receiver.url}/hook", {"event": "succeeded", "amount": "1.00"}, "k1")
        (request,) = receiver.requests
        header = request.headers[SIGNATURE_HEADER]
        assert request.headers[EVENT_ID_HEADER] == "k1"
        assert readme_verify("whsec-readme-check", header, request.body) is True
        assert readme_verify("another-secret", header, request.body) is False
        assert readme_verify("whsec-readme-check", header, request.body + b" ") is False
    finally:
        await notifier.close()
        receiver.stop()


async def test_a_webhook_host_resolving_inwards_is_refused_at_delivery() -> None:
    """A URL whose host only resolves to an internal address (127.1 is 127.0.0.1 to every
    resolver) is refused when it is posted to, unless private addresses are allowed; then
    the post goes to the address checked, under the URL's own Host."""
    receiver = Peer().start()
    port = receiver.url.rsplit(":", 1)[1]
    target = f"http://127.1:{port}/hook"
    strict = WebhookNotifier("whsec-inward")
    allowing = WebhookNotifier("whsec-inward", allow_private=True)
    try:
        with pytest.raises(PermanentDelivery, match=r"'127\.1' resolves to 127\.0\.0\.1"):
            await strict.send(target, {"event": "succeeded"}, "k1")
        assert receiver.requests == []
        await allowing.send(target, {"event": "succeeded"}, "k2")
        (request,) = receiver.requests
        assert request.headers["Host"] == f"127.1:{port}"
        # A name that does not resolve may resolve later: retried, not dead.
        with pytest.raises(RetryableDelivery, match="does not resolve"):
            await strict.send("http://hooks.does-not-exist.invalid/x", {}, "k3")
    finally:
        await strict.close()
        await allowing.close()
        receiver.stop()


@dataclass
class HeldReceiver(WebhookReceiver):
    """A slow receiver: answers only once the test releases it."""

    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def respond(self, request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.arrived.set()
        self.release.wait(30)
        return super().respond(request)


async def test_each_notification_is_recorded_as_sent_without_waiting_for_its_batch(
    napp: App,
) -> None:
    """Regression: a leased batch was recorded as sent only once its slowest receiver answered;
    the lease ran out meanwhile and another deliverer sent the others again. Each is now
    recorded right after its own send: the fast receivers' notifications are `sent` while the
    slow one is still in flight, and nothing is left for a deliverer that comes after the
    lease."""
    assert napp.outbox is not None
    fast = WebhookReceiver(secret=SECRET).start()
    slow = HeldReceiver(secret=SECRET).start()
    registry = build_registry(napp.settings)
    try:
        await fund(napp, {"alice": 10_000, "bob": 0})
        targets = [f"webhook:{fast.url}/{i}" for i in range(5)] + [f"webhook:{slow.url}/slow"]
        pid = await pay_notifying(napp, 100, *targets)
        stop = asyncio.Event()
        run = asyncio.create_task(napp.run(stop, deliver=False))  # its notifications wait
        try:
            await all_final(napp, [pid])
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)
        assert await states(napp, pid) == ["pending"] * 6
        clock = ManualClock(datetime.now(UTC))
        lease = timedelta(seconds=60)
        first, second = (
            Deliverer(napp.outbox, registry, clock, napp.pool, lease=lease) for _ in range(2)
        )
        sending = asyncio.create_task(first.deliver_due())

        async def fast_ones_sent() -> bool:
            assert napp.outbox is not None
            found = await napp.db(napp.outbox.list, None, pid)
            (held,) = [n for n in found if n.target.endswith("/slow")]
            # The slow one still in flight: not given up on (the post's own timeout) yet.
            in_flight = slow.arrived.is_set() and held.last_error is None
            return in_flight and all(n.state == "sent" for n in found if n is not held)

        await wait_for(fast_ones_sent, 15, "the fast notifications recorded while one is slow")
        slow.release.set()
        assert await asyncio.wait_for(sending, 30) == 6
        assert await states(napp, pid) == ["sent"] * 6
        clock.advance(lease + timedelta(seconds=1))  # the batch's lease has run out
        assert await second.deliver_due() == 0
        assert sorted(r.path for r in fast.requests) == [f"/{i}" for i in range(5)]
        assert [r.path for r in slow.requests] == ["/slow"]
    finally:
        slow.release.set()
        await registry.close()
        fast.stop()
        slow.stop()


async def test_a_webhook_lookup_that_outlasts_its_timeout_is_retried() -> None:
    """The system resolver can take minutes (an unreachable DNS server), and the delivery's
    lease runs meanwhile: the lookup is bounded like the post, and one that runs out is
    retried later, not dead. Here the loop's one resolver thread is held busy, so the lookup
    of a name that does resolve cannot answer in time."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    busy = threading.Event()
    loop.run_in_executor(None, busy.wait, 30)
    notifier = WebhookNotifier("whsec-dns", timeout=0.2, allow_private=True)
    try:
        with pytest.raises(RetryableDelivery, match=r"'localhost' did not resolve within 0\.2 s"):
            await asyncio.wait_for(notifier.send("http://localhost:9/hook", {}, "k1"), 10)
    finally:
        busy.set()
        await notifier.close()


@pytest.mark.parametrize(
    "host",
    ["100.64.0.1", "[2002:7f00:1::]", "[64:ff9b::7f00:1]", "[2001::1]", "[::127.0.0.1]"],
)
async def test_a_webhook_resolving_to_a_non_global_address_is_dead_at_delivery(host: str) -> None:
    """Shared address space (100.64.0.0/10) and IPv6 forms that carry an internal IPv4
    address are refused at delivery too, before anything is sent; so is port 0."""
    notifier = WebhookNotifier("whsec-inward")
    try:
        with pytest.raises(PermanentDelivery, match="otherwise internal address"):
            await notifier.send(f"http://{host}:8080/hook", {"event": "succeeded"}, "k1")
        with pytest.raises(PermanentDelivery, match="invalid port"):
            await notifier.send(f"http://{host}:0/hook", {"event": "succeeded"}, "k2")
    finally:
        await notifier.close()


async def test_notifications_sent_together_are_recorded_in_one_transaction(
    settings: Settings,
) -> None:
    """Each send is recorded as soon as it ends, but sends that end together share one write
    transaction: recording them one by one cost a transaction per notification, as many as
    the payments themselves took."""
    app = await App.open(settings)  # nothing configured: the log channel
    try:
        assert app.outbox is not None
        outbox = app.outbox
        await fund(app, {"alice": 1_000, "bob": 0})
        pids = [await pay_notifying(app, 10) for _ in range(12)]
        stop = asyncio.Event()
        run = asyncio.create_task(app.run(stop, deliver=False))  # their notifications wait
        try:
            await all_final(app, pids)
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)
        recorded: list[list[int]] = []
        real = outbox.mark_sent

        def mark_sent(ids: Any, now: datetime) -> None:
            recorded.append(list(ids))
            real(ids, now)

        outbox.mark_sent = mark_sent  # type: ignore[method-assign,assignment]
        registry = build_registry(app.settings)
        deliverer = Deliverer(outbox, registry, app.clock, app.pool)
        try:
            assert await deliverer.deliver_due() == 12
        finally:
            await registry.close()
        pending = [n.id for pid in pids for n in await app.db(outbox.list, None, pid)]
        assert sorted(i for ids in recorded for i in ids) == sorted(pending)
        assert len(recorded) <= 2, recorded  # the first at once, the others together
        for pid in pids:
            assert await states(app, pid) == ["sent"]
    finally:
        await app.close()


async def test_a_receiver_that_trickles_its_answer_is_given_up_on_and_retried(
    napp: App,
) -> None:
    """Each read of a webhook's answer is bounded (10 s), a whole send was not: a receiver
    sending one byte every half second held its send, and the delivery pass with it, for as
    long as it liked (past the lease, when another deliverer sends it again). Now a send has a
    deadline, and the notification is rescheduled with the reason."""
    assert napp.outbox is not None

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b".")
                await writer.drain()
                await asyncio.sleep(0.2)

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registry = build_registry(napp.settings)
    try:
        await fund(napp, {"alice": 10_000, "bob": 0})
        pid = await pay_notifying(napp, 100, f"webhook:http://127.0.0.1:{port}/hook")
        stop = asyncio.Event()
        run = asyncio.create_task(napp.run(stop, deliver=False))  # its notifications wait
        try:
            await all_final(napp, [pid])
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)
        deliverer = Deliverer(
            napp.outbox, registry, napp.clock, napp.pool, send_deadline=timedelta(seconds=1)
        )
        assert await asyncio.wait_for(deliverer.deliver_due(), 10) == 1
        (held,) = await napp.db(napp.outbox.list, None, pid)
        assert held.state == "pending" and held.last_error == "no answer within 1 s"
    finally:
        await registry.close()
        server.close()
