"""SIGKILL a real worker process in the middle of a payment; a new worker finishes it, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from paysched.actors import Actor
from paysched.app import App
from paysched.config import Settings
from paysched.domain import OccurrenceState
from tests.conftest import wait_for, wait_for_sync
from tests.http_peers import WebhookReceiver
from tests.integration.helpers import all_final, fund, pay

S = OccurrenceState
WORKER = Path(__file__).with_name("worker_proc.py")
pytestmark = pytest.mark.faults


def start_worker(env: dict[str, str], mode: str, marker: Path) -> subprocess.Popen[bytes]:
    """The worker's log goes to a file next to the marker: a pipe nobody reads would block the
    worker once 64 KiB of log filled it."""
    full_env = os.environ | env | {"PAYSCHED_TEST_MARKER": str(marker)}
    log_file = (marker.parent / f"{marker.name}.{mode}.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, str(WORKER), mode],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    finally:
        log_file.close()


def log_of(marker: Path, mode: str) -> str:
    return (marker.parent / f"{marker.name}.{mode}.log").read_text(errors="replace")[-4000:]


@pytest.mark.parametrize("mode", ["hang-before-settle", "hang-in-transaction"])
async def test_killed_mid_payment_is_finished_once(
    app: App, env: dict[str, str], tmp_path: Path, mode: str
) -> None:
    await fund(app, {"alice": 10_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 2_500)
    marker = tmp_path / "fault-point"
    victim = start_worker(env, mode, marker)
    try:
        wait_for_sync(marker.exists, 30, f"the worker to reach {mode}")
        (occ,) = await app.db(app.store.reads.occurrences_of, pid)
        assert occ.state == S.EXECUTING
        assert (await app.db(app.store.accounts.get_account, "bob")).balance == 0
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    survivor = start_worker(env, "normal", tmp_path / "unused")
    try:
        (done,) = await all_final(app, [pid], timeout=60)  # stall detection: ~2 lock periods
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=90) == 0, log_of(tmp_path / "unused", "normal")
    assert done.state == S.SUCCEEDED
    # The killed claim and the takeover are one attempt under two fences.
    assert done.attempts == 1 and done.takeovers == 1 and done.fence == 2
    assert await app.db(app.store.accounts.succeeded_transfer_count) == 1
    assert (await app.db(app.store.accounts.get_account, "bob")).balance == 2_500
    assert (await app.db(app.store.accounts.get_account, "alice")).balance == 7_500
    assert (await app.db(app.store.accounts.ledger_report)).balanced


async def test_killed_after_payment_notification_still_sent_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The worker dies right after the payment committed, before anything was delivered: the
    notification committed with the payment is sent by the next worker, exactly once."""
    hook = WebhookReceiver(secret="whsec-fault").start()
    env = env | {
        "PAYSCHED_WEBHOOK_SECRET": "whsec-fault",
        "PAYSCHED_NOTIFY_POLL": "100ms",
        "PAYSCHED_WEBHOOK_ALLOW_PRIVATE": "1",
    }  # the receiver is on 127.0.0.1
    app = await App.open(Settings.from_env(env))
    try:
        await fund(app, {"alice": 10_000, "bob": 0})
        payment = await app.create_payment(
            actor=Actor.python(),
            payer="alice",
            payee="bob",
            amount=100,
            currency="USD",
            due_at=app.clock.now(),
            cron=None,
            timezone=None,
            memo="",
            notify=[f"webhook:{hook.url}/hook"],
        )
        marker = tmp_path / "settled"
        victim = start_worker(env, "die-after-settle", marker)
        try:
            wait_for_sync(marker.exists, 30, "the payment to commit")
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        assert app.outbox is not None
        assert [n.state for n in await app.db(app.outbox.list, None, payment.id)] == ["pending"]
        assert hook.requests == []
        survivor = start_worker(env, "normal", tmp_path / "unused")
        try:
            wait_for_sync(lambda: len(hook.accepted) == 1, 30, "the notification")

            async def sent() -> bool:
                assert app.outbox is not None
                found = await app.db(app.outbox.list, None, payment.id)
                return [n.state for n in found] == ["sent"]

            await wait_for(sent, 10, "the outbox row to be marked sent")
        finally:
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(timeout=90) == 0, log_of(tmp_path / "unused", "normal")
        assert len(hook.requests) == 1
        (occ,) = await app.db(app.store.reads.occurrences_of, payment.id)
        assert occ.state == S.SUCCEEDED and occ.attempts == 1
        assert await app.db(app.store.accounts.succeeded_transfer_count) == 1
    finally:
        hook.stop()
        await app.close()


async def test_sigterm_past_the_grace_forces_the_stop_and_the_payment_is_taken_over(
    app: App, env: dict[str, str], tmp_path: Path
) -> None:
    """The forced-shutdown path: SIGTERM while a payment hangs, with a 1 s grace. The process
    exits on its own (not killed), the payment is neither failed nor settled, and the next
    worker takes it over and pays once."""
    await fund(app, {"alice": 10_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 1_500)
    marker = tmp_path / "fault-point"
    victim = start_worker(env | {"PAYSCHED_SHUTDOWN_GRACE": "1s"}, "hang-before-settle", marker)
    try:
        wait_for_sync(marker.exists, 30, "the worker to be inside the payment")
        victim.send_signal(signal.SIGTERM)
        try:
            code = victim.wait(timeout=30)
        except subprocess.TimeoutExpired:
            victim.send_signal(signal.SIGUSR1)  # its threads' stacks into the log
            wait_for_sync(lambda: "File" in log_of(marker, "hang-before-settle"), 5, "stacks")
            pytest.fail(
                "still running 30 s after SIGTERM:\n" + log_of(marker, "hang-before-settle")
            )
        assert code == 0, log_of(marker, "hang-before-settle")
    finally:
        if victim.poll() is None:
            victim.kill()
    assert "did not finish within 1s; forcing close" in log_of(marker, "hang-before-settle")
    (occ,) = await app.db(app.store.reads.occurrences_of, pid)
    assert occ.state == S.EXECUTING and occ.attempts == 1
    assert (await app.db(app.store.accounts.get_account, "bob")).balance == 0
    survivor = start_worker(env, "normal", tmp_path / "unused")
    try:
        (done,) = await all_final(app, [pid], timeout=60)
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=90) == 0, log_of(tmp_path / "unused", "normal")
    assert done.state == S.SUCCEEDED and done.attempts == 1 and done.takeovers == 1
    assert await app.db(app.store.accounts.succeeded_transfer_count) == 1
    assert (await app.db(app.store.accounts.get_account, "bob")).balance == 1_500
