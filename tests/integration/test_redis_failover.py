"""Redis under Sentinel: a real primary, replica and three sentinels of the test's own (never the
shared server). The primary is SIGKILLed while payments fall due under a real `paysched run`
group; the sentinels promote the replica, every client follows it without a restart, and each
payment is paid exactly once.

The replica is made to miss the queue (its copy is flushed just before the failover, as if the
last writes had not reached it): the scheduler notices that another server answers and
reconciles the queue from the database at once, not at its next tick (an hour away here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paysched.chaos.servers import SentinelRedis
from paysched.db.store import Store
from paysched.domain import OccurrenceState
from paysched.redis_server import free_port
from tests.conftest import make_env, wait_for_sync

COUNT = 24


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelRedis]:
    servers = SentinelRedis(tmp_path / "sentinel")
    servers.start()
    yield servers
    servers.destroy()


def paysched(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "paysched", *args, "--json"],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def counts(store: Store) -> dict[str, int]:
    return store.reads.occurrence_counts()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_redis_failover_under_sentinel_loses_and_doubles_nothing(
    sentinel: SentinelRedis, database_url: str, tmp_path: Path
) -> None:
    env = make_env(
        DATABASE_URL=database_url,
        PAYSCHED_DATA_DIR=str(tmp_path / "data"),
        PAYSCHED_CONCURRENCY="4",
        # Hourly: only the scheduler's watch of Redis can rebuild the queue in time.
        PAYSCHED_TICK_CRON="0 0 * * * *",
        **sentinel.env,
    )
    check = paysched(env, "check")
    primary = f"127.0.0.1:{sentinel.primary().port}"
    assert check["redis"]["sentinel"]["primary"] == primary
    assert [s["primary"] for s in check["redis"]["sentinel"]["sentinels"]] == [primary] * 3

    paysched(env, "accounts", "create", "alice")
    paysched(env, "accounts", "create", "bob")
    paysched(env, "accounts", "deposit", "alice", "100.00")
    key = paysched(env, "apikeys", "create", "ops", "--scope", "write")["key"]
    port = free_port()
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"Authorization": f"Bearer {key}"}
    )
    log = tmp_path / "run.log"
    with log.open("w") as out:
        group = subprocess.Popen(
            [sys.executable, "-m", "paysched", "run", "--processes=2", f"--api=127.0.0.1:{port}"],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    store = Store.connect(database_url)
    try:
        # Half due now, half due across the failover.
        for i in range(COUNT):
            due_in = "1s" if i < COUNT // 2 else f"{8 + i - COUNT // 2}s"
            paysched(
                env,
                "schedule",
                "--from",
                "alice",
                "--to",
                "bob",
                "--amount",
                "1.00",
                "--in",
                due_in,
            )
        succeeded = OccurrenceState.SUCCEEDED.value
        wait_for_sync(lambda: ready(api), 60, "the API")
        wait_for_sync(lambda: counts(store).get(succeeded, 0) >= COUNT // 2, 60, "the first half")

        # The replica loses the queue: writes it has not received are gone after a failover.
        replica = next(n for n in sentinel.nodes if n is not sentinel.primary())
        with replica.client() as client:
            client.config_set("replica-read-only", "no")
            client.flushall()
        killed_at = time.monotonic()
        promoted_s = sentinel.fail_over()
        done_before = counts(store).get(succeeded, 0)
        wait_for_sync(
            lambda: counts(store).get(succeeded, 0) > done_before,
            60,
            "a payment after the failover",
        )
        recovered_s = time.monotonic() - killed_at
        # The API follows the new primary too: ready again, and what it creates is paid.
        wait_for_sync(lambda: ready(api), 30, "the API ready on the new primary")
        made = api.post(
            "/v1/payments", json={"from": "alice", "to": "bob", "amount": "1.00", "in": "1s"}
        )
        assert made.status_code == 201, made.text
        wait_for_sync(lambda: counts(store).get(succeeded, 0) == COUNT + 1, 90, "every payment")
        print(
            f"redis failover: promoted in {promoted_s:.1f} s, paying again "
            f"{recovered_s:.1f} s after the kill"
        )

        assert store.accounts.succeeded_transfer_count() == COUNT + 1
        report = store.accounts.ledger_report()
        assert report.balanced, report.problems
        bob = paysched(env, "accounts", "show", "bob")
        assert bob["balance"] == f"{COUNT + 1}.00"
        text = log.read_text()
        assert "reconciling the queue with the database now" in text
        assert "Traceback" not in text
    finally:
        api.close()
        store.close()
        group.terminate()
        group.wait(timeout=60)


def ready(api: httpx.Client) -> bool:
    try:
        answer = api.get("/readyz")
    except httpx.TransportError:
        return False
    return answer.status_code == 200 and answer.json()["checks"]["redis"] == "ok"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_check_names_what_each_sentinel_sees_and_fails_clearly_without_them(
    sentinel: SentinelRedis, database_url: str, tmp_path: Path
) -> None:
    env = make_env(DATABASE_URL=database_url, PAYSCHED_DATA_DIR=str(tmp_path), **sentinel.env)
    paysched(env, "migrate")
    sentinel.sentinels[1].stop()
    view = paysched(env, "check")["redis"]["sentinel"]
    assert view["primary"] == f"127.0.0.1:{sentinel.primary().port}"
    assert [s["ok"] for s in view["sentinels"]] == [True, False, True]

    for node in sentinel.sentinels:
        node.stop()
    done = subprocess.run(
        [sys.executable, "-m", "paysched", "check"],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 5, done.stdout + done.stderr
    assert "no sentinel answers with a primary of that name" in done.stdout
    assert "(0 of 3 sentinels answer)" in done.stdout
    # Said as such, not as the probe's timeout: a sentinel that refuses is not retried for
    # seconds before the next is asked.
    assert "Traceback" not in done.stdout + done.stderr
