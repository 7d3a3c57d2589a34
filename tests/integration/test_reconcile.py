"""Reconciliation (paysched.reconcile) against the stand-in provider: each discrepancy kind is
made by writing the provider's ledger (or paysched's) directly after real payments went
through, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from paysched.actors import Actor
from paysched.app import App
from paysched.config import Settings
from paysched.db import tables as t
from paysched.db.actions import ActionFilter, find_actions
from paysched.db.store.accounts import entries, write_entries
from paysched.db.store.reconcile import ReconcileStore, Reconciliation
from paysched.domain import OccurrenceState
from paysched.executors.base import PaymentOrder
from paysched.reconcile import KINDS, parse_period
from paysched.standin.server import StandinProvider
from tests.conftest import wait_for
from tests.integration.helpers import all_final, fund, pay, running

S = OccurrenceState
TOKEN = "s3cret-token"


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[StandinProvider]:
    with StandinProvider(tmp_path / "provider.db", token=TOKEN, settle_s=0.2) as instance:
        yield instance


def http_settings(settings: Settings, provider: StandinProvider) -> Settings:
    return settings.with_overrides(
        executor="http",
        provider_url=provider.url,
        provider_token=TOKEN,
        provider_timeout=timedelta(seconds=2),
        provider_connect_timeout=timedelta(seconds=1),
    )


def provider_sql(provider: StandinProvider, sql: str, *params: Any) -> None:
    """Write the stand-in's ledger directly, as a provider's own mistake would."""
    conn = sqlite3.connect(provider.ledger.path, timeout=10)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def a_charge(provider: StandinProvider, key: str, reference: str, amount: str) -> None:
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    provider_sql(
        provider,
        'INSERT INTO charges (key, id, amount, currency, "from", "to", reference, status, '
        "created_at, fingerprint) VALUES (?, ?, ?, 'USD', 'alice', 'bob', ?, 'succeeded', ?, 'x')",
        key,
        f"ch_extra_{key}",
        amount,
        reference,
        now,
    )


def today() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=2), now + timedelta(hours=2)


async def paid(app: App, count: int) -> list[Any]:
    """`count` payments of 1.01, 1.02 ... USD, through the provider; their occurrences."""
    await fund(app, {"alice": 0, "bob": 0})
    pids = [await pay(app, "alice", "bob", 101 + i, in_s=0.2) for i in range(count)]
    async with running(app):
        occs = await all_final(app, pids, 60)
    assert all(o.state == S.SUCCEEDED for o in occs)
    return sorted(occs, key=lambda o: o.payment_id)


async def reconcile(app: App, **kwargs: Any) -> Reconciliation:
    start, end = today()
    rec = await app.reconciler(page_size=3).run(start, end, **kwargs)
    assert rec is not None
    assert rec.state == "done", rec.error
    return rec


async def items_of(app: App, rec: Reconciliation) -> list[Any]:
    return await app.db(ReconcileStore(app.store.engine).items, rec.id, 0, 1000)


async def test_every_discrepancy_kind_is_found_page_by_page(
    settings: Settings, provider: StandinProvider
) -> None:
    app = await App.open(http_settings(settings, provider))
    try:
        occs = await paid(app, 8)  # more than two pages of 3
        clean = await reconcile(app)
        assert clean.provider_listed is True
        assert clean.counts["discrepancies"] == 0, await items_of(app, clean)
        assert clean.counts["occurrences"] == 8 and clean.counts["charges"] == 8
        assert clean.counts["compared_with"] == "provider"

        # succeeded here but not charged: the provider lost occ 0's charge.
        provider_sql(provider, "DELETE FROM charges WHERE reference = ?", occs[0].key)
        # amount mismatch: the provider charged 9.99 for occ 1 (1.02 here).
        provider_sql(provider, "UPDATE charges SET amount = '9.99' WHERE key = ?", occs[1].key)
        # duplicate: a second charge for occ 2's key.
        a_charge(provider, "dup-key", occs[2].key, "1.03")
        # charged but not succeeded here: occ 3 marked failed in paysched.
        with app.store.engine.begin() as conn:
            conn.execute(
                update(t.occurrences)
                .where(t.occurrences.c.id == occs[3].id)
                .values(state="failed", reason="test")
            )
            # still unresolved: occ 4 in needs_review.
            conn.execute(
                update(t.occurrences)
                .where(t.occurrences.c.id == occs[4].id)
                .values(state="needs_review", reason="test")
            )
            # a ledger transfer between two users that no occurrence stands behind.
            ids = dict(conn.execute(select(t.accounts.c.name, t.accounts.c.id)).all())
            write_entries(
                conn, entries("stray-1", ids["alice"], ids["bob"], 500, None, datetime.now(UTC))
            )
        # a charge of a key paysched never made.
        a_charge(provider, "stranger", "no-such-occurrence", "4.00")

        rec = await reconcile(app)
        items = await items_of(app, rec)
        kinds = Counter(i.kind for i in items)
        assert kinds == {
            "succeeded_not_charged": 1,
            "amount_mismatch": 1,
            "duplicate_charge": 1,
            "charged_not_succeeded": 2,
            "unresolved": 1,
            "ledger_without_occurrence": 1,
        }, items
        assert rec.counts["discrepancies"] == 7
        assert {k: rec.counts[k] for k in KINDS} == dict(kinds)
        by = {(i.kind, i.occurrence_key): i for i in items}
        assert by["succeeded_not_charged", occs[0].key].detail["amount"] == "1.01"
        mismatch = by["amount_mismatch", occs[1].key].detail
        assert (mismatch["amount"], mismatch["provider"]["amount"]) == ("1.02", "9.99")
        assert by["duplicate_charge", occs[2].key].detail["provider"]["charges"] == 2
        assert by["charged_not_succeeded", occs[3].key].detail["state"] == "failed"
        assert ("charged_not_succeeded", "no-such-occurrence") in by
        assert by["unresolved", occs[4].key].detail["state"] == "needs_review"
        stray = next(i for i in items if i.kind == "ledger_without_occurrence")
        assert stray.reference == "stray-1" and stray.detail["amount"] == "5.00"
        # Reconcile changed nothing by itself.
        assert (await app.db(app.store.reads.get_occurrence, occs[4].id)).state == S.NEEDS_REVIEW
    finally:
        await app.close()


async def test_a_charge_made_hours_after_its_period_is_still_found(
    settings: Settings, provider: StandinProvider
) -> None:
    """An occurrence started in the period whose charge came hours after it (a retry sent
    late, an unknown outcome resolved later) is not reported succeeded_not_charged: the
    provider is asked up to the last settle of the period's occurrences, not an hour past
    its end."""
    app = await App.open(http_settings(settings, provider))
    try:
        occs = await paid(app, 2)
        now = datetime.now(UTC)
        started = now - timedelta(hours=5)  # the attempt began in the period...
        with app.store.engine.begin() as conn:  # ...the charge and its settle are now
            conn.execute(
                update(t.occurrences)
                .where(t.occurrences.c.id == occs[0].id)
                .values(started_at=started)
            )
        period = (now - timedelta(hours=6), now - timedelta(hours=4))
        rec = await app.reconciler(page_size=3).run(*period)
        assert rec is not None and rec.state == "done", rec
        assert rec.counts["occurrences"] == 1
        assert rec.counts["discrepancies"] == 0, await items_of(app, rec)
        # The other occurrence's charge, listed too (the window is wider), is not this
        # period's: it started after it.
        assert rec.counts["charges"] == 2
        # And a charge the provider really lost is still found.
        provider_sql(provider, "DELETE FROM charges WHERE reference = ?", occs[0].key)
        rec = await app.reconciler(page_size=3).run(*period)
        assert rec is not None
        assert [i.kind for i in await items_of(app, rec)] == ["succeeded_not_charged"]
    finally:
        await app.close()


async def test_resolve_settles_an_unknown_from_the_provider(
    settings: Settings, provider: StandinProvider
) -> None:
    app = await App.open(http_settings(settings, provider))
    try:
        occs = await paid(app, 2)
        with app.store.engine.begin() as conn:  # its outcome "lost": the provider has it
            conn.execute(
                update(t.occurrences)
                .where(t.occurrences.c.id == occs[0].id)
                .values(state="unknown", reason="read timeout")
            )
        plain = await reconcile(app)
        assert plain.counts["unresolved"] == 1
        assert (await app.db(app.store.reads.get_occurrence, occs[0].id)).state == S.UNKNOWN

        rec = await reconcile(app, resolve=True, by=Actor("cli", "cli (ops)", "cli"))
        assert rec.counts["unresolved"] == 0 and rec.counts["resolved"] == 1
        assert rec.counts["discrepancies"] == 0 and rec.actor_name == "cli (ops)"
        occ = await app.db(app.store.reads.get_occurrence, occs[0].id)
        assert occ.state == S.SUCCEEDED
        history = await app.db(app.store.reads.transitions_of, [occ.id])
        assert f"resolved by reconcile #{rec.id}" in (history[-1].reason or "")
        # Who asked, and that they settled money: the reconcile and the resolve it made.
        ops = ActionFilter(actor_kind="cli")  # (not the fixture's own, by the Python API)
        done = await app.db(find_actions, app.store.engine, ops, 10)
        assert [(a.action, a.actor.name, a.occurrence_id) for a in done] == [
            ("resolve", "cli (ops)", occ.id),
            ("reconcile", "cli (ops)", None),
        ]
        assert done[0].detail["outcome"] == "succeeded"
        assert done[1].detail["reconciliation"] == rec.id and done[1].detail["resolve"] == 1
        resolved = [i for i in await items_of(app, rec) if i.kind == "resolved"]
        assert resolved[0].detail["resolved_to"] == "succeeded"
    finally:
        await app.close()


async def test_an_executor_that_cannot_list_checks_unresolved_only(settings: Settings) -> None:
    class NoListing:
        name = "plain"

        async def execute(self, order: PaymentOrder) -> Any:
            raise AssertionError("not called")

    app = await App.open(settings, executor_factory=lambda _: NoListing())
    try:
        rec = await reconcile(app)
        assert rec.provider_listed is False
        assert rec.counts["compared_with"] == "lookups"
        assert "lookups only" in (await app.db(_summary, rec))
    finally:
        await app.close()


def _summary(rec: Reconciliation) -> str:
    from paysched.reconcile import summary

    return summary(rec)


async def test_the_ledger_executor_is_compared_with_the_ledger(app: App) -> None:
    await fund(app, {"alice": 10_000, "bob": 0})
    pids = [await pay(app, "alice", "bob", 100 + i, in_s=0.2) for i in range(4)]
    async with running(app):
        await all_final(app, pids, 60)
    rec = await reconcile(app)
    assert rec.counts["compared_with"] == "ledger"
    assert rec.counts["discrepancies"] == 0 and rec.counts["charges"] == 4
    occ = (await app.db(app.store.reads.occurrences_of, pids[0]))[0]
    with app.store.engine.begin() as conn:  # money moved for an occurrence marked failed
        conn.execute(
            update(t.occurrences).where(t.occurrences.c.id == occ.id).values(state="failed")
        )
    rec = await reconcile(app)
    assert rec.counts["charged_not_succeeded"] == 1
    assert rec.counts["discrepancies"] == 1  # not also a ledger_without_occurrence


async def test_scheduled_reconcile_runs_once_and_notifies(
    env: dict[str, str], provider: StandinProvider
) -> None:
    settings = http_settings(
        Settings.from_env(env | {"PAYSCHED_RECONCILE_NOTIFY": "log"}), provider
    )
    one, two = await App.open(settings), await App.open(settings)
    try:
        await fund(one, {"alice": 0, "bob": 0})
        # Yesterday, per the scheduled period: a charge paysched has no occurrence for.
        yesterday = datetime.now(UTC) - timedelta(days=1)
        provider_sql(
            provider,
            'INSERT INTO charges (key, id, amount, currency, "from", "to", reference, status, '
            "created_at, fingerprint) VALUES ('k', 'ch_k', '1.00', 'USD', 'a', 'b', 'k', "
            "'succeeded', ?, 'x')",
            yesterday.isoformat(timespec="microseconds"),
        )
        fired = datetime.now(UTC)
        results = await asyncio.gather(
            one.scheduled_reconcile(fired), two.scheduled_reconcile(fired)
        )
        done = [r for r in results if r is not None]
        assert len(done) == 1 and done[0].trigger == "schedule"
        assert done[0].counts["charged_not_succeeded"] == 1
        with one.store.engine.connect() as conn:
            assert conn.execute(select(t.reconciliations.c.id)).all() == [(done[0].id,)]
            rows = conn.execute(
                select(t.notifications).where(t.notifications.c.event == "reconciliation")
            ).all()
        assert len(rows) == 1 and rows[0].payment_id is None
        payload = json.loads(rows[0].payload)
        assert payload["counts"]["charged_not_succeeded"] == 1
    finally:
        await one.close()
        await two.close()


async def test_the_schedule_runs_inside_run(env: dict[str, str], provider: StandinProvider) -> None:
    settings = http_settings(
        Settings.from_env(env | {"PAYSCHED_RECONCILE_CRON": "* * * * * *"}), provider
    )
    apps = [await App.open(settings), await App.open(settings)]
    fired = Counter[int]()
    for n, app in enumerate(apps):  # every second: count each process's fire times
        real = app.scheduled_reconcile

        async def counted(at: datetime, n: int = n, real: Any = real) -> Any:
            fired[n] += 1
            return await real(at)

        app.scheduled_reconcile = counted  # type: ignore[method-assign,assignment]

    async def fired_thrice() -> bool:
        return min(fired[0], fired[1]) >= 3

    try:
        async with running(apps[0], worker=False), running(apps[1], worker=False):
            await wait_for(fired_thrice, 20, "three fire times in each process")
        with apps[0].store.engine.connect() as conn:
            rows = conn.execute(select(t.reconciliations)).all()
        # One report of yesterday however often and wherever the schedule fired.
        assert [(r.state, r.trigger) for r in rows] == [("done", "schedule")]
    finally:
        for app in apps:
            await app.close()


async def test_a_day_left_running_or_failed_is_run_again(
    env: dict[str, str], provider: StandinProvider
) -> None:
    """A process that died mid-run leaves its report `running` for good; a failed one (the
    provider away at 02:00) is no answer either. The next fire of that day's schedule runs
    the day again; a report another process is running now is left to it."""
    app = await App.open(http_settings(Settings.from_env(env), provider))
    try:
        await fund(app, {"alice": 0, "bob": 0})
        fired = datetime.now(UTC)
        day = (fired - timedelta(days=1)).date().isoformat()
        key = f"schedule:{day}"
        reports = ReconcileStore(app.store.engine)

        def plant(state: str, started: datetime) -> int:
            rid = reports.start(started, started, "schedule", None, key, started)
            assert rid is not None
            if state == "failed":
                reports.fail(rid, "provider unreachable", {}, started)
            return rid

        # Running, started a minute ago: another process has it; nothing runs.
        fresh = plant("running", fired - timedelta(minutes=1))
        assert await app.scheduled_reconcile(fired) is None
        # Running since long before: its process died. Marked failed, and the day runs.
        with app.store.engine.begin() as conn:
            conn.execute(
                update(t.reconciliations)
                .where(t.reconciliations.c.id == fresh)
                .values(created_at=fired - timedelta(hours=2))
            )
        again = await app.scheduled_reconcile(fired)
        assert again is not None and again.state == "done" and again.dedup_key == key
        dead = reports.get(fresh)
        assert dead.state == "failed" and "abandoned" in (dead.error or "")
        assert dead.dedup_key == f"{key}#{fresh}"
        # Done: the day is not run a third time.
        assert await app.scheduled_reconcile(fired) is None
        # A failed one is run again too.
        with app.store.engine.begin() as conn:
            conn.execute(
                update(t.reconciliations)
                .where(t.reconciliations.c.id == again.id)
                .values(state="failed", error="provider unreachable")
            )
        third = await app.scheduled_reconcile(fired)
        assert third is not None and third.state == "done" and third.id != again.id
        assert reports.get(again.id).dedup_key == f"{key}#{again.id}"
    finally:
        await app.close()


async def test_a_fire_missed_while_nothing_ran_is_caught_up_at_start(
    env: dict[str, str], provider: StandinProvider
) -> None:
    """Daily at 02:00, and no process was up at the last 02:00: `run` reconciles that day as
    it starts, not a day later."""
    settings = http_settings(
        Settings.from_env(env | {"PAYSCHED_RECONCILE_CRON": "0 2 * * *"}), provider
    )
    app = await App.open(settings)

    async def reported() -> bool:
        with app.store.engine.connect() as conn:
            return conn.execute(select(t.reconciliations.c.state)).all() == [("done",)]

    try:
        async with running(app, worker=False):
            await wait_for(reported, 20, "the missed day's report")
        with app.store.engine.connect() as conn:
            [row] = conn.execute(select(t.reconciliations)).all()
        last_two = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
        if last_two > datetime.now(UTC):
            last_two -= timedelta(days=1)
        assert row.dedup_key == f"schedule:{(last_two - timedelta(days=1)).date().isoformat()}"
    finally:
        await app.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_exit_codes_json_and_bad_input(env: dict[str, str], provider: StandinProvider) -> None:
    env = env | {
        "PAYSCHED_EXECUTOR": "http",
        "PAYSCHED_PROVIDER_URL": provider.url,
        "PAYSCHED_PROVIDER_TOKEN": TOKEN,
    }
    day = datetime.now(UTC).date().isoformat()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "paysched", "reconcile", *args],
            env=os.environ | env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = cli("--from", day, "--to", day)
    assert ok.returncode == 0, ok.stderr
    assert (
        ok.stdout.strip()
        .splitlines()[-1]
        .endswith("0 occurrences, 0 charges compared with the provider's listing")
    )
    assert "0 discrepancies" in ok.stdout
    a_charge(provider, "stranger", "no-such-occurrence", "4.00")
    bad = cli("--from", day, "--to", day, "--json")
    assert bad.returncode == 1, bad.stderr
    doc = json.loads(bad.stdout)
    assert doc["reconciliation"]["discrepancies"] == 1
    assert [i["kind"] for i in doc["items"]] == ["charged_not_succeeded"]
    for args, field in (
        (("--from", "yesterday", "--to", day), "from"),
        (("--from", day, "--to", "2026-13-01"), "to"),
        (("--from", day, "--to", "2001-01-01"), "to"),
        (("--from", "2026-01-01T00:00:00", "--to", day), "from"),
    ):
        wrong = cli(*args)
        assert wrong.returncode == 2, (args, wrong.stderr)
        assert wrong.stderr.startswith(f"error: {field}:"), wrong.stderr
        assert "Traceback" not in wrong.stderr


def test_period_bounds() -> None:
    period = parse_period("2026-12-01", "2026-12-01")
    assert period.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 12, 2, tzinfo=UTC)  # the last day is included
    timed = parse_period("2026-12-01T10:00:00+02:00", "2026-12-01T12:00:00Z")
    assert timed.start == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert timed.end == datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_the_standin_lists_its_charges_in_pages(provider: StandinProvider) -> None:
    import httpx

    for i in range(5):
        a_charge(provider, f"k{i}", f"ref{i}", "1.00")
    start, end = today()
    seen: list[str] = []
    cursor: str | None = None
    with httpx.Client(base_url=provider.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        while True:
            params = {
                "created_from": start.isoformat(),
                "created_to": end.isoformat(),
                "limit": "2",
            } | ({"cursor": cursor} if cursor else {})
            body = c.get("/payments", params=params).json()
            assert len(body["data"]) <= 2
            seen += [charge["reference"] for charge in body["data"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"ref{i}" for i in range(5)]
        wrong = c.get("/payments", params={"created_from": "x", "created_to": end.isoformat()})
        assert wrong.status_code == 400 and wrong.json()["reason"].startswith("created_from:")


async def test_a_provider_that_cannot_be_reached_fails_the_report(settings: Settings) -> None:
    from paysched.redis_server import free_port

    dead = settings.with_overrides(
        executor="http",
        provider_url=f"http://127.0.0.1:{free_port()}",
        provider_token=TOKEN,
        provider_connect_timeout=timedelta(seconds=1),
    )
    app = await App.open(dead)
    try:
        start, end = today()
        rec = await app.reconciler().run(start, end)
        assert rec is not None and rec.state == "failed"
        assert rec.error is not None and "listing failed: provider request failed" in rec.error
        assert TOKEN not in rec.error
    finally:
        await app.close()
