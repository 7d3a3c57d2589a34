"""The Python API (`paysched.open` / `Paysched`) end to end: real Redis (own key prefix), a
temp SQLite file (and PostgreSQL for the money path), scheduler and workers in the test's own
event loop; and examples/embedded.py as a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import paysched
from paysched import recurrence
from paysched.client import build_settings
from paysched.config import Settings
from paysched.domain import OccurrenceState
from tests.conftest import make_env, wait_for

ROOT = Path(__file__).resolve().parents[2]
USD = "USD"


@pytest.fixture
def sqlite_env(shared_redis_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    return make_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}",
        REDIS_URL=shared_redis_url,
        PAYSCHED_QUEUE_PREFIX=redis_prefix,
        PAYSCHED_DATA_DIR=str(tmp_path / "data"),
    )


@pytest.fixture
async def ps(sqlite_env: dict[str, str]) -> AsyncIterator[paysched.Paysched]:
    async with paysched.open(Settings.from_env(sqlite_env)) as instance:
        yield instance


async def funded(ps: paysched.Paysched, **balances: str) -> None:
    for name, amount in balances.items():
        await ps.create_account(name, currency=USD)
        if Decimal(amount):
            await ps.deposit(name, Decimal(amount))


async def balance(ps: paysched.Paysched, name: str) -> Decimal:
    account = await ps.get_account(name)
    return paysched.to_decimal(account.balance, account.currency)


async def test_a_payment_completes_once_and_its_event_is_seen(settings: Settings) -> None:
    """On SQLite and PostgreSQL: schedule, run in-process, completed event, money moved once."""
    async with paysched.open(settings) as ps:
        await funded(ps, alice="100.00", bob="0")
        seen: list[paysched.Event] = []

        async def on_completed(event: paysched.Event) -> None:
            seen.append(event)

        ps.on("completed", on_completed)
        payment = await ps.schedule(
            payer="alice", payee="bob", amount=Decimal("12.34"), in_=timedelta(seconds=0.2)
        )
        assert (payment.amount, payment.currency) == (1234, USD)
        await ps.start()
        detail = await ps.wait_for(payment.id, timeout=30)

        async def event_seen() -> bool:
            return any(e.payment_id == payment.id for e in seen)

        await wait_for(event_seen, what="the completed event")
        await ps.stop()
        assert not ps.running
        assert detail.final and detail.status == "succeeded"
        assert detail.amount == Decimal("12.34")
        [occ] = detail.occurrences
        assert occ.state == OccurrenceState.SUCCEEDED and occ.attempts == 1
        assert [e.occurrence_key for e in seen] == [occ.key]
        assert await balance(ps, "alice") == Decimal("87.66")
        assert await balance(ps, "bob") == Decimal("12.34")
        assert await ps.app.db(ps.app.store.accounts.succeeded_transfer_count) == 1
        stats = await ps.stats()
        assert stats.occurrences.get("succeeded") == 1


async def test_failed_and_progress_events_reach_sync_callbacks(ps: paysched.Paysched) -> None:
    await funded(ps, carol="5.00", dave="0")
    events: list[paysched.Event] = []
    ps.on(["failed", "progress"], events.append)
    payment = await ps.schedule(payer="carol", payee="dave", amount="50.00", in_="0s")
    await ps.start()
    detail = await ps.wait_for(str(payment.id))
    await ps.stop()
    assert detail.status == "failed"
    kinds = [e.kind for e in events if e.payment_id == payment.id]
    assert paysched.EventKind.PROGRESS in kinds
    assert kinds[-1] is paysched.EventKind.FAILED
    assert "insufficient funds" in events[-1].detail["reason"]
    assert await balance(ps, "carol") == Decimal("5.00")


async def test_cancel(ps: paysched.Paysched) -> None:
    await funded(ps, alice="10.00", bob="0")
    payment = await ps.schedule(payer="alice", payee="bob", amount="1.00", in_="30s")
    result = await ps.cancel(payment.id)
    assert [o.payment_id for o in result.cancelled] == [payment.id] and not result.in_flight
    detail = await ps.get_payment(payment.id)
    assert detail.status == "cancelled" and detail.final
    assert [o.state for o in detail.occurrences] == [OccurrenceState.CANCELLED]
    with pytest.raises(paysched.Conflict):
        await ps.cancel(payment.id)
    # Final already: wait_for returns at once, nothing running needed.
    assert (await ps.wait_for(payment.id, timeout=5)).status == "cancelled"
    [listed] = await ps.list_payments(state="cancelled")
    assert listed.id == payment.id
    assert await balance(ps, "alice") == Decimal("10.00")


async def test_calendar_rules_pause_resume_skip_preview(ps: paysched.Paysched) -> None:
    await funded(ps, alice="10.00", bob="0")
    # Rent on the 31st, clamped to each month's last day, at 09:00 New York.
    payment = await ps.schedule(
        payer="alice",
        payee="bob",
        amount="1.00",
        rrule="FREQ=MONTHLY;BYMONTHDAY=31",
        start="2030-01-31T09:00",
        tz="America/New_York",
    )
    dues = await ps.preview(payment.id, 4)
    assert [d.date().isoformat() for d in dues] == [
        "2030-01-31",
        "2030-02-28",
        "2030-03-31",
        "2030-04-30",
    ]
    assert (await ps.pause(payment.id)).state.value == "paused"
    with pytest.raises(paysched.Conflict):
        await ps.pause(payment.id)
    assert (await ps.resume(payment.id)).state.value == "active"
    skipped = await ps.skip_next(payment.id)
    assert skipped.due_at == dues[0] and skipped.state == OccurrenceState.SKIPPED
    assert await ps.preview(payment.id, 3) == dues[1:]
    with pytest.raises(paysched.InvalidInput) as refused:
        await ps.schedule(
            payer="alice", payee="bob", amount="1.00", every="fortnight", start="2030-01-01T09:00"
        )
    assert refused.value.field == "every"


async def test_a_rule_is_checked_off_the_callers_event_loop(
    ps: paysched.Paysched, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a calendar rule expands it: on paysched's thread pool, not on the loop of the
    program that embeds paysched (issue 19 finding 8)."""
    await funded(ps, alice="10.00", bob="0")
    loops: list[asyncio.AbstractEventLoop | None] = []
    check = recurrence.parse_recurrence

    def seen(*args: Any, **kwargs: Any) -> recurrence.Recurrence:
        try:
            loops.append(asyncio.get_running_loop())
        except RuntimeError:  # no loop runs in this thread
            loops.append(None)
        return check(*args, **kwargs)

    monkeypatch.setattr(recurrence, "parse_recurrence", seen)
    await ps.schedule(
        payer="alice",
        payee="bob",
        amount="1.00",
        rrule="FREQ=MONTHLY;BYMONTHDAY=-1",
        start="2030-01-31T09:00",
        tz="UTC",
    )
    assert loops and not any(loops), loops


def _refusal(exc: pytest.ExceptionInfo[paysched.InvalidInput]) -> tuple[str, str]:
    return exc.value.field, exc.value.problem


async def test_invalid_input_names_the_field_and_writes_nothing(ps: paysched.Paysched) -> None:
    await funded(ps, alice="10.00", bob="0")
    soon = timedelta(minutes=1)
    base: dict[str, Any] = {"payer": "alice", "payee": "bob", "amount": "1.00"}
    past = datetime.now(UTC) - timedelta(hours=1)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"amount": 12.34, "in_": soon}, "amount", "float"),
        ({"amount": 12, "in_": soon}, "amount", "Decimal"),
        ({"amount": Decimal("1.001"), "in_": soon}, "amount", "decimals"),
        ({"amount": Decimal("1.000"), "in_": soon}, "amount", "decimals"),
        ({"amount": Decimal("NaN"), "in_": soon}, "amount", "decimal number"),
        ({"amount": "-1", "in_": soon}, "amount", "greater than zero"),
        ({"at": past + timedelta(hours=2), "in_": soon}, "schedule", "exactly one"),
        ({}, "schedule", "exactly one of at, in_, cron or rrule / every"),
        ({"at": past}, "at", "allow_past=True"),
        ({"at": datetime(2030, 1, 1)}, "at", "no UTC offset"),
        ({"in_": timedelta(seconds=-1)}, "in_", "negative"),
        ({"in_": "soon"}, "in_", "duration"),
        ({"in_": soon, "tz": "Europe/Berlin"}, "tz", "cron"),
        ({"cron": "0 9 * * 1", "tz": "Mars/Olympus"}, "tz", "time zone"),
        ({"cron": "0 0 30 2 *"}, "cron", "never"),
        ({"in_": soon, "currency": "XYZ"}, "currency", "ISO 4217"),
        ({"in_": soon, "notify": ["webhook:http://127.0.0.1/hook"]}, "notify", "loopback"),
        ({"in_": soon, "notify": "log"}, "notify", "list"),
        ({"in_": soon, "payee": "nobody"}, "payee", "no account"),
        ({"in_": soon, "payee": "alice"}, "payee", "different"),
        ({"in_": soon, "payer": "@external:USD"}, "payer", "external"),
    ]
    for changes, field, needle in cases:
        with pytest.raises(paysched.InvalidInput) as refused:
            await ps.schedule(**(base | changes))
        got_field, problem = _refusal(refused)
        assert (got_field, needle in problem) == (field, True), (changes, got_field, problem)
    assert await ps.list_payments() == []
    # allow_past runs a past due time at once instead of refusing it.
    accepted = await ps.schedule(**base, at=past, allow_past=True)
    assert accepted.due_at == past
    with pytest.raises(paysched.InvalidInput) as refused:
        await ps.deposit("alice", 5.0)  # type: ignore[arg-type]
    assert refused.value.field == "amount"


async def test_the_currency_defaults_to_the_payers(ps: paysched.Paysched) -> None:
    await ps.create_account("eva", currency="EUR")
    await ps.create_account("finn", currency="EUR")
    await ps.deposit("eva", Decimal("10"))
    payment = await ps.schedule(payer="eva", payee="finn", amount="2.50", in_="1h")
    assert (payment.currency, payment.amount) == ("EUR", 250)
    with pytest.raises(paysched.InvalidInput) as info:
        await ps.schedule(payer="ghost", payee="finn", amount="1", in_="1h")
    assert info.value.field == "payer" and "ghost" in str(info.value)


async def test_not_found_and_bad_ids(ps: paysched.Paysched) -> None:
    for missing in (999, 2**40, "12345"):
        with pytest.raises(paysched.NotFound):
            await ps.get_payment(missing)
    with pytest.raises(paysched.NotFound):
        await ps.cancel(999)
    with pytest.raises(paysched.NotFound):
        await ps.get_account("nobody")
    for bad in (0, -3, "abc", True):
        with pytest.raises(paysched.InvalidInput) as refused:
            await ps.get_payment(bad)
        assert refused.value.field == "id"
    with pytest.raises(paysched.InvalidInput) as refused:
        await ps.list_payments(state="running")
    assert refused.value.field == "state"


async def test_subscribe_unsubscribe_and_failing_callbacks(ps: paysched.Paysched) -> None:
    await funded(ps, alice="10.00", bob="0")
    everything: list[paysched.Event] = []
    first_only: list[paysched.Event] = []

    def broken(event: paysched.Event) -> None:
        raise RuntimeError("a subscriber's bug")

    async def broken_async(event: paysched.Event) -> None:
        raise RuntimeError("an async subscriber's bug")

    ps.on("*", everything.append)
    unsubscribe = ps.on("completed", first_only.append)
    ps.on("completed", broken)
    ps.on("progress", broken_async)
    with pytest.raises(paysched.InvalidInput) as refused:
        ps.on("finished", everything.append)
    assert refused.value.field == "kind"

    await ps.start()
    first = await ps.schedule(payer="alice", payee="bob", amount="1.00", in_="0s")
    assert (await ps.wait_for(first.id)).status == "succeeded"

    async def completed(pid: int) -> bool:
        return any(e.kind == "completed" and e.payment_id == pid for e in everything)

    await wait_for(lambda: completed(first.id), what="the first completed event")
    unsubscribe()
    unsubscribe()  # a second call does nothing
    second = await ps.schedule(payer="alice", payee="bob", amount="2.00", in_="0s")
    assert (await ps.wait_for(second.id)).status == "succeeded"
    await wait_for(lambda: completed(second.id), what="the second completed event")
    await ps.stop()
    assert [e.payment_id for e in first_only] == [first.id]
    assert await balance(ps, "bob") == Decimal("3.00")


async def test_lifecycle_conflicts(sqlite_env: dict[str, str]) -> None:
    ps = await paysched.open(Settings.from_env(sqlite_env), concurrency=2)
    assert ps.settings.concurrency == 2
    await funded(ps, alice="1.00", bob="0")
    await ps.start()
    with pytest.raises(paysched.Conflict):
        await ps.start()
    # Stopped once a payment went through (the workers are up), not the instant they start:
    # bullmq's worker closed before its first fetch leaves a Redis client to the GC.
    payment = await ps.schedule(payer="alice", payee="bob", amount="1.00", in_="0s")
    assert (await ps.wait_for(payment.id)).status == "succeeded"
    await ps.stop()
    await ps.stop()  # not running: nothing to do
    await ps.close()
    await ps.close()
    with pytest.raises(paysched.Conflict):
        await ps.list_payments()


async def test_wait_for_raises_what_stopped_the_workers(
    ps: paysched.Paysched, monkeypatch: pytest.MonkeyPatch
) -> None:
    await funded(ps, alice="1.00", bob="0")
    payment = await ps.schedule(payer="alice", payee="bob", amount="1.00", in_="30s")

    async def broken(stop: object, **parts: bool) -> None:
        raise RuntimeError("the workers died")

    monkeypatch.setattr(ps.app, "run", broken)
    await ps.start()
    with pytest.raises(RuntimeError, match="the workers died"):
        await ps.wait_for(payment.id, timeout=20)
    with pytest.raises(RuntimeError, match="the workers died"):
        await ps.stop()
    assert not ps.running


def test_settings_overrides(tmp_path: Path) -> None:
    base = Settings.from_env({"PAYSCHED_DATA_DIR": str(tmp_path / "a")})
    moved = build_settings(base, {"data_dir": str(tmp_path / "b"), "queue_name": "bot"})
    assert moved.data_dir == tmp_path / "b" and moved.queue_name == "bot"
    assert moved.database_url == f"sqlite:///{tmp_path / 'b' / 'paysched.db'}"
    pg = build_settings(base, {"database_url": "postgresql://u@h/db", "redis_url": "redis://r"})
    assert pg.database_url.startswith("postgresql+psycopg://") and pg.redis_explicit
    with pytest.raises(paysched.ConfigError) as refused:
        build_settings(base, {"conccurency": 5})
    assert refused.value.variable == "conccurency"


def test_import_paysched_stays_light() -> None:
    code = (
        "import sys, paysched; heavy = [m for m in ('sqlalchemy', 'bullmq', 'redis', "
        "'paysched.client') if m in sys.modules]; print(heavy or 'light', paysched.__version__);"
        "assert set(paysched.__all__) == set(paysched._LAZY) | {'__version__'}; "
        "assert all(getattr(paysched, n) is not None for n in paysched.__all__)"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("light ")


def test_embedded_example_runs(shared_redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    """examples/embedded.py as a user runs it: its own data dir (so the default SQLite file),
    the test's Redis with its own key prefix, nothing else of paysched's configuration."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAYSCHED_", "REDIS_", "DATABASE_URL"))
    }
    env |= {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        "REDIS_URL": shared_redis_url,
        "PAYSCHED_QUEUE_PREFIX": redis_prefix,
        "PAYSCHED_DATA_DIR": str(tmp_path / "data"),
    }
    # The timeout only guards against a hang; the example gives up on its own after 30 s.
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embedded.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "4 payments: 2 succeeded, 1 failed, 1 cancelled, 0 unfinished" in out
    assert out.count(" completed: ") == 2 and " failed: insufficient funds" in out
    assert "sorry, amount: got the float 12.34" in out
    assert "[progress]" in out
    assert "all payments final, balances moved exactly once" in out
    assert (tmp_path / "data" / "paysched.db").exists()


async def test_remind_in_the_python_api(ps: paysched.Paysched) -> None:
    alice = await ps.create_account("alice", currency=USD, remind="24h")
    assert alice.remind == timedelta(hours=24)
    await ps.create_account("bob", currency=USD)
    own = await ps.schedule(
        payer="alice", payee="bob", amount="1", cron="0 9 * * *", remind=timedelta(minutes=90)
    )
    assert own.remind == timedelta(minutes=90)
    default = await ps.schedule(payer="alice", payee="bob", amount="1", cron="0 9 * * *")
    assert default.remind == timedelta(hours=24)
    for bad in ("0s", timedelta(days=31), "soon"):
        with pytest.raises(paysched.InvalidInput) as refused:
            await ps.schedule(payer="alice", payee="bob", amount="1", in_="1h", remind=bad)
        assert refused.value.field == "remind"
