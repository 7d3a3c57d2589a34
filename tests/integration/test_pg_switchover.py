"""PostgreSQL primary switchover (issue 21): a primary with a synchronous standby, a
multi-host DATABASE_URL with target_session_attrs=read-write, the primary lost mid-run and the
standby promoted. Payments due during the switchover run exactly once on the promoted server,
none lost, the ledger balanced; the recovery time is reported."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

from paysched.actors import Actor
from paysched.app import App
from paysched.chaos.servers import ReplicatedPostgres, pg_bindir
from paysched.config import Settings
from paysched.db.store import Store
from paysched.domain import OccurrenceState
from tests.conftest import make_env, unavailable, wait_for_sync

S = OccurrenceState
PAYMENTS = 20
SPAN_S = 10.0
AMOUNT = 100


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[ReplicatedPostgres]:
    try:
        pg_bindir()
    except RuntimeError:
        unavailable("PostgreSQL's binaries (initdb, pg_ctl, pg_basebackup)")
    replicated = ReplicatedPostgres(tmp_path / "pg")
    try:
        replicated.start()
        yield replicated
    finally:
        replicated.destroy()


def counts(url: str) -> dict[str, int]:
    """Occurrences by state, on a fresh connection (libpq picks the read-write host)."""
    with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
        rows = conn.execute("SELECT state, count(*) FROM occurrences GROUP BY state").fetchall()
    return {str(state): int(n) for state, n in rows}


async def schedule(env: dict[str, str]) -> None:
    app = await App.open(Settings.from_env(env))
    try:
        now = app.clock.now()
        await app.db(app.store.accounts.create_account, "alice", "USD", now)
        await app.db(app.store.accounts.create_account, "bob", "USD", now)
        await app.db(app.store.accounts.deposit, "alice", PAYMENTS * AMOUNT, now)
        first = app.clock.now() + timedelta(seconds=3)
        for i in range(PAYMENTS):
            await app.create_payment(
                actor=Actor.python(),
                payer="alice",
                payee="bob",
                amount=AMOUNT,
                currency="USD",
                cron=None,
                due_at=first + timedelta(seconds=SPAN_S * i / PAYMENTS),
                timezone=None,
                memo="",
            )
    finally:
        await app.close()


async def test_payments_due_during_a_switchover_run_once_on_the_promoted_server(
    pair: ReplicatedPostgres,
    shared_redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    env = make_env(
        DATABASE_URL=pair.url(),
        REDIS_URL=shared_redis_url,
        PAYSCHED_QUEUE_PREFIX=redis_prefix,
        PAYSCHED_DATA_DIR=str(tmp_path / "data"),
    )
    await schedule(env)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "paysched", "run", "--processes", "2"],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        # The switchover lands in the middle of the payments falling due.
        wait_for_sync(
            lambda: counts(pair.url()).get("succeeded", 0) >= PAYMENTS // 3,
            30,
            "a third of the payments before the switchover",
        )
        stopped_at = datetime.now(UTC)
        promote_s = pair.fail_over()  # pg_ctl stop -m immediate, pg_ctl promote
        wait_for_sync(
            lambda: counts(pair.url()).get("succeeded", 0) == PAYMENTS,
            40,
            f"all payments to succeed on the promoted server; log: {log}",
        )
    finally:
        run.send_signal(signal.SIGTERM)
        code: int | None = None
        try:
            code = run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
    output = log.read_text(errors="replace")
    # Shut down within its grace: nothing stayed hung on the old primary.
    assert code == 0, output[-3000:]
    store = Store.connect(pair.url(), pool_size=1)
    try:
        occurrences = store.reads.all_occurrences()
        assert len(occurrences) == PAYMENTS
        assert {o.state for o in occurrences} == {S.SUCCEEDED}
        # Exactly once: one transfer per occurrence, balances equal to their entries.
        assert store.accounts.succeeded_transfer_count() == PAYMENTS
        assert store.accounts.ledger_report().balanced
        assert store.accounts.get_account("bob").balance == PAYMENTS * AMOUNT
        assert store.accounts.get_account("alice").balance == 0
        # A lost primary is paysched's own infrastructure failing: never a payment's attempt.
        assert all(o.attempts == 1 for o in occurrences), [(o.key, o.attempts) for o in occurrences]
        after = [o.finished_at for o in occurrences if o.finished_at and o.finished_at > stopped_at]
    finally:
        store.close()
    assert after, "no payment ran after the switchover"
    recovery = (min(after) - stopped_at).total_seconds()
    print(
        f"\nPostgreSQL switchover: promote took {promote_s:.2f}s; first payment on the "
        f"promoted server {recovery:.2f}s after the primary stopped; "
        f"{len(after)} of {PAYMENTS} payments ran after it"
    )
    record_property("pg_switchover_recovery_s", round(recovery, 2))
    # Said once per outage (per process), and once when the database answered again.
    assert "database unavailable" in output and "database answers again" in output, output[-3000:]
    # A new synchronous standby, copied from the promoted primary, on the old primary's port.
    pair.reattach()
    assert pair.standby is not None and pair.standby.port != pair.primary.port


def test_a_primary_that_stops_answering_is_cut_off_and_the_promoted_one_used(
    pair: ReplicatedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """The old primary's machine hangs instead of dying: its connections stay open and never
    answer, so no error ever comes. The connection is cut off after the stall limit and the
    work goes to the promoted server, with a warning; it used to wait forever in silence."""
    store = Store.connect(pair.url(), pool_size=2)
    try:
        store.migrate()
        health = store.engine.pool_health  # type: ignore[attr-defined]
        health.warn_s, health.abort_s = 1.0, 3.0
        now = datetime.now(UTC)
        store.accounts.create_account("carol", "USD", now)  # a pooled connection to the primary
        pair.fail_over(hang=True)
        done = threading.Event()
        errors: list[BaseException] = []

        def deposit() -> None:
            deadline = time.monotonic() + 30
            while True:  # as a worker does: an infrastructure error is retried
                try:
                    store.accounts.deposit("carol", 500, now)
                    break
                except Exception as exc:  # recorded, and retried
                    errors.append(exc)
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
            done.set()

        began = time.monotonic()
        with caplog.at_level(logging.INFO, logger="paysched.db"):
            threading.Thread(target=deposit, daemon=True).start()
            assert done.wait(40), "the deposit hung on the frozen primary"
        took = time.monotonic() - began
        assert store.accounts.get_account("carol").balance == 500, errors
        print(f"\nhung primary: the deposit went through on the promoted server after {took:.1f}s")
        text = caplog.text
        assert "database unavailable" in text and "no answer to a" in text, text
        assert "database answers again" in text, text
    finally:
        store.close()


def test_a_connection_kept_after_its_commit_is_not_taken_for_a_stalled_one(
    postgres_url: str,
) -> None:
    """Only a COMMIT in flight is timed: a connection its owner keeps after committing (a
    migration's advisory lock, a long read) was once still counted as "in a COMMIT" and cut
    off by the watchdog at the limit."""
    store = Store.connect(postgres_url, pool_size=1)
    try:
        health = store.engine.pool_health  # type: ignore[attr-defined]
        health.warn_s, health.abort_s = 0.2, 0.4
        with store.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            conn.commit()
            # The watchdog stops once nothing is in flight; it would cut this one off.
            wait_for_sync(lambda: health._watcher is None, 10, "nothing in flight")
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
            conn.commit()
    finally:
        store.close()
