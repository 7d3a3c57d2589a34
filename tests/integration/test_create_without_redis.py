"""A create whose enqueue Redis does not take: answered with the committed payment, at once.

Regression: the create committed, then waited on Redis (redis-py retries for ~5 minutes) and
answered 503, which invited a retry and so a second payment, over HTTP, the CLI and the Python
API alike. Now the payment is the answer once it is committed; its occurrence is left
`scheduled`, and the scheduler's next tick queues it once Redis is back: it runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

import paysched
from paysched.api import create_api
from paysched.app import App
from paysched.config import Settings
from paysched.db.apikeys import ApiKeys
from paysched.domain import OccurrenceState
from tests.conftest import PrivateRedis
from tests.integration.helpers import all_final, fund, running

S = OccurrenceState
# Far longer than a create may take now, far shorter than redis-py's retries of a lost Redis.
PATIENCE_S = 60


@pytest.fixture
def cfg(settings: Settings, private_redis: PrivateRedis) -> Settings:
    return settings.with_overrides(redis_url=private_redis.url, redis_explicit=True)


@contextlib.contextmanager
def writes_paused(server: PrivateRedis) -> Iterator[None]:
    """Redis answers PING (a command starts) but holds every write (its enqueue hangs)."""
    with contextlib.closing(server.client()) as client:
        client.execute_command("CLIENT", "PAUSE", 300_000, "WRITE")  # type: ignore[no-untyped-call]
        try:
            yield
        finally:
            client.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]


async def runs_once(app: App, payment_id: int) -> None:
    """Exactly one payment exists, left `scheduled`; with Redis back, the next tick queues it
    and it runs once."""
    assert [p.id for p in await app.db(app.store.payments.list_payments, 10)] == [payment_id]
    (occ,) = await app.db(app.store.reads.occurrences_of, payment_id)
    assert occ.state == S.SCHEDULED
    async with running(app):
        (done,) = await all_final(app, [payment_id])
    assert done.state == S.SUCCEEDED and done.attempts == 1
    assert await app.db(app.store.accounts.succeeded_transfer_count) == 1


async def test_http_create_answers_201_while_redis_is_down(
    cfg: Settings, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    app = await App.open(cfg)
    try:
        await fund(app, {"alice": 10_000, "bob": 0})
        _, key = await app.db(ApiKeys(app.store.engine).create, "test", "write", app.clock.now())
        transport = httpx.ASGITransport(app=create_api(app))
        private_redis.stop()
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await asyncio.wait_for(
                client.post(
                    "/v1/payments",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"from": "alice", "to": "bob", "amount": "1.00", "in": "1s"},
                ),
                PATIENCE_S,
            )
        assert response.status_code == 201, response.text
        assert ["not yet queued" in r.getMessage() for r in caplog.records].count(True) == 1
        private_redis.start()  # same port, nothing kept: the job is gone
        await runs_once(app, response.json()["id"])
    finally:
        await app.close()


async def test_python_api_schedule_returns_while_redis_is_down(
    cfg: Settings, private_redis: PrivateRedis
) -> None:
    async with paysched.open(cfg) as ps:
        await ps.create_account("alice", currency="USD")
        await ps.create_account("bob", currency="USD")
        await ps.deposit("alice", Decimal("100"))
        private_redis.stop()
        payment = await asyncio.wait_for(
            ps.schedule(payer="alice", payee="bob", amount="1.00", in_=timedelta(seconds=1)),
            PATIENCE_S,
        )
        private_redis.start()
        await runs_once(ps.app, payment.id)


async def test_cli_schedule_exits_0_while_redis_holds_writes(
    env: dict[str, str], cfg: Settings, private_redis: PrivateRedis
) -> None:
    app = await App.open(cfg)
    try:
        await fund(app, {"alice": 10_000, "bob": 0})
        with writes_paused(private_redis):
            result = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "paysched",
                    "schedule",
                    "--from",
                    "alice",
                    "--to",
                    "bob",
                    "--amount",
                    "1.00",
                    "--in",
                    "1s",
                    "--json",
                ],
                env=os.environ | env | {"REDIS_URL": private_redis.url},
                capture_output=True,
                text=True,
                timeout=PATIENCE_S,
            )
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("not yet queued") == 1, result.stderr  # one warning
        await runs_once(app, json.loads(result.stdout)["id"])
    finally:
        await app.close()
