"""What is late or stuck, and who is alive: heartbeats of every process role, late / unknown /
needs_review payments in the list (API and dashboard alike), the oldest due occurrence's age,
and the overview's chart of the last hour (real Redis, SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

from paysched.clock import ManualClock
from paysched.db.store.execution import Claim, Finish
from paysched.db.store.reads import Activity
from paysched.domain import OccurrenceState
from paysched.heartbeat import Heartbeat, processes_key, read_processes
from paysched.views import duration_text
from paysched.web.chart import activity_svg
from tests.api.conftest import Api
from tests.api.test_api import accounts
from tests.api.test_dashboard import page, schedule, served
from tests.conftest import wait_for
from tests.integration.helpers import all_final, running

S = OccurrenceState
HOUR = timedelta(hours=1)


def row_of(rows: list[dict[str, object]], pid: int) -> dict[str, object]:
    [row] = [r for r in rows if r["id"] == pid]
    return row


def list_cell(text: str, pid: int) -> str:
    """The status cell of payment `pid` in a payments table."""
    found = re.search(
        rf'href="/dashboard/payments/{pid}">#{pid}</a></td>\s*<td>(.*?)</td>', text, re.S
    )
    assert found, text
    return found.group(1)


# -- late and stuck ----------------------------------------------------------------------------


async def test_a_due_payment_no_worker_started_is_late_in_the_api_list_and_overview(
    api: Api,
) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    due = await schedule(api, **{"in": "200ms"})  # no worker runs: it never starts
    later = await schedule(api, **{"in": "1h"})
    now = api.app.clock.now()
    api.app.clock = ManualClock(now + timedelta(minutes=2, seconds=3))  # two minutes on
    rows = (await api.get("/v1/payments")).json()["data"]
    late = row_of(rows, due)
    assert late["status"] == "pending" and late["unresolved"] is None
    assert isinstance(late["late_ms"], int) and 122_000 <= late["late_ms"] <= 124_000, late
    assert row_of(rows, later)["late_ms"] is None  # not due yet
    marker = f"late {duration_text(late['late_ms'])}"
    assert marker.startswith("late 2m 0")
    listed = await page(api, "/dashboard/payments")
    assert marker in list_cell(listed, due) and "s-late" in list_cell(listed, due)
    assert "late" not in list_cell(listed, later)
    overview = await page(api, "/dashboard/")
    assert marker in list_cell(overview, due)
    # The payment's own page marks the occurrence that waits to start, not the one not due.
    detail = await page(api, f"/dashboard/payments/{due}")
    assert f'<span class="status s-late">{marker}</span>' in detail, detail
    assert "s-late" not in await page(api, f"/dashboard/payments/{later}")
    # The oldest due occurrence's age, as a warning past a minute.
    processes = overview.split("<h2>Processes</h2>", 1)[1].split("</section>", 1)[0]
    assert re.search(
        r'<p class="warn">Oldest due occurrence .*<strong>2m 0\ds</strong> ago', processes
    ), processes


async def test_a_paused_payment_is_not_late(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    pid = await schedule(api, cron="* * * * *")
    assert (await api.post(f"/v1/payments/{pid}/pause", scope="write")).status_code == 200
    api.app.clock = ManualClock(api.app.clock.now() + timedelta(minutes=5))
    row = row_of((await api.get("/v1/payments")).json()["data"], pid)
    assert row["status"] == "paused" and row["late_ms"] is None
    assert "s-late" not in await page(api, f"/dashboard/payments/{pid}")


async def settle_as(api: Api, pid: int, target: OccurrenceState, resolve_at: datetime) -> None:
    store, now = api.app.store, api.app.clock.now()
    [occ] = await api.app.db(store.reads.occurrences_of, pid)
    claim = await api.app.db(store.execution.claim, occ.id, now)
    assert isinstance(claim, Claim), claim
    finish = Finish(claim, target, "the provider did not say", resolve_at=resolve_at)
    assert await api.app.db(store.execution.finish_many, [finish], now) == [True]


async def test_unknown_and_needs_review_are_shown_as_such_with_the_next_lookup(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    unknown, review = await schedule(api, **{"in": "30s"}), await schedule(api, **{"in": "30s"})
    lookup = (api.app.clock.now() + timedelta(minutes=7)).replace(microsecond=0)
    await settle_as(api, unknown, S.UNKNOWN, lookup)
    await settle_as(api, review, S.NEEDS_REVIEW, lookup)
    rows = (await api.get("/v1/payments")).json()["data"]
    assert row_of(rows, unknown)["unresolved"] == "unknown"
    assert datetime.fromisoformat(str(row_of(rows, unknown)["resolve_at"])) == lookup
    assert row_of(rows, review)["unresolved"] == "needs_review"
    assert row_of(rows, review)["resolve_at"] is None
    listed = await page(api, "/dashboard/payments")
    shown = lookup.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert "s-unknown" in list_cell(listed, unknown) and "pending" not in list_cell(listed, unknown)
    assert f"next lookup {shown}" in list_cell(listed, unknown)
    assert "s-needs_review" in list_cell(listed, review)
    overview = await page(api, "/dashboard/")
    attention = overview.split("<h2>Needs a person</h2>", 1)[1].split("</section>", 1)[0]
    assert "Next lookup" in attention and shown in attention


# -- heartbeats --------------------------------------------------------------------------------


async def test_each_role_beats_while_running_and_says_when_it_stopped(api: Api) -> None:
    app = api.app

    async def roles(state: str) -> set[str]:
        found = (await api.get("/v1/stats")).json()["processes"]
        return {p["role"] for p in found if p["state"] == state}

    async def all_up() -> bool:
        return {"worker", "scheduler", "delivery"} <= await roles("up")

    async with running(app):
        await wait_for(all_up, 10, "the roles' first beats")
        [worker] = [
            p for p in (await api.get("/v1/stats")).json()["processes"] if p["role"] == "worker"
        ]
        assert worker["queue"] == app.settings.queue_name and worker["seen_s_ago"] < 15
        overview = await page(api, "/dashboard/")
        processes = overview.split("<h2>Processes</h2>", 1)[1].split("</section>", 1)[0]
        assert f":{worker['pid']}</code>" in processes and "s-up" in processes
    assert {"worker", "scheduler", "delivery"} <= await roles("stopped")
    metrics = (await api.get("/metrics")).text
    assert 'paysched_processes{role="worker",state="stopped"} 1.0' in metrics


async def test_the_api_server_beats_too(api: Api) -> None:
    app = api.app

    async def api_role() -> list[str]:
        return [p["state"] for p in await app.processes() if p["role"] == "api"]

    async with served(app):
        await wait_for(lambda: _equals(api_role(), ["up"]), 10, "the API's first beat")
    assert await api_role() == ["stopped"]


async def _equals(got: Awaitable[object], wanted: object) -> bool:
    return await got == wanted


async def test_a_process_that_stops_beating_is_down_then_forgotten(api: Api) -> None:
    redis = api.app.queue.redis  # type: ignore[union-attr]
    key = processes_key(api.app.settings.queue_prefix, api.app.settings.queue_name)
    clock = ManualClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    beat = Heartbeat(redis, key, "q", clock, host="h1", pid=4242)
    async with beat.beating({"worker": lambda: True, "scheduler": lambda: False}):
        await wait_for(lambda: _fields(redis, key, {"h1:4242:worker"}), 5, "the first beat")
        # A role whose loop ended does not beat.
        assert await redis.hget(key, "h1:4242:scheduler") is None
        await beat.beat()
    [seen] = await read_processes(redis, key, clock.now())
    assert seen["state"] == "stopped"  # it said so on the way out
    # Killed instead: its last beat is one of a process still running, and no more come.
    await redis.hset(key, "h1:4242:worker", _live_value(beat, clock.now()))
    [seen] = await read_processes(redis, key, clock.advance(timedelta(seconds=14)))
    assert (seen["state"], seen["seen_s_ago"]) == ("up", 14.0)
    [seen] = await read_processes(redis, key, clock.advance(timedelta(seconds=2)))
    assert seen["state"] == "down"  # three beats of 5 s missed
    assert await read_processes(redis, key, clock.advance(timedelta(days=1))) == []
    assert await redis.hlen(key) == 0  # forgotten, not only hidden


async def test_a_role_that_ends_by_an_error_is_not_shown_stopped(api: Api) -> None:
    redis = api.app.queue.redis  # type: ignore[union-attr]
    key = processes_key(api.app.settings.queue_prefix, api.app.settings.queue_name)
    clock = ManualClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    beat = Heartbeat(redis, key, "q", clock, host="h2", pid=7)
    with contextlib.suppress(RuntimeError):
        async with beat.beating({"scheduler": lambda: True}):
            await wait_for(lambda: _fields(redis, key, {"h2:7:scheduler"}), 5, "the first beat")
            raise RuntimeError("the scheduler crashed")
    [seen] = await read_processes(redis, key, clock.advance(timedelta(seconds=16)))
    assert seen["state"] == "down"


def _live_value(beat: Heartbeat, at: datetime) -> str:
    import json

    return json.dumps(
        {
            "role": "worker",
            "host": beat.host,
            "pid": beat.pid,
            "queue": "q",
            "started_at": at.isoformat(),
            "last_seen": at.isoformat(),
            "stopped": False,
        }
    )


async def _fields(redis: object, key: str, wanted: set[str]) -> bool:
    got = await redis.hkeys(key)  # type: ignore[attr-defined]
    return wanted <= {k.decode() if isinstance(k, bytes) else k for k in got}


# -- the chart ---------------------------------------------------------------------------------


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_chart_draws_lateness_and_outcomes_per_minute() -> None:
    found = []
    for minute in range(0, 60, 3):
        started = NOW - timedelta(minutes=minute, seconds=30)
        for n, late_ms in enumerate((2, 5, 40 if minute else 95_000)):
            due = started - timedelta(milliseconds=late_ms)
            state = S.FAILED if n == 2 else S.SUCCEEDED
            found.append(Activity(due, started, started + timedelta(milliseconds=5), state))
    found.append(Activity(NOW - 2 * HOUR, None, None, S.UNKNOWN))  # never started: left out
    html = str(activity_svg(found, NOW, HOUR))
    assert "60 started" in html and "40 succeeded, 20 failed" in html
    assert "max 1m 35s" in html  # the latest minute's straggler
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 2
    for svg in svgs:
        ET.fromstring(svg)  # well-formed: nothing unescaped broke the markup
    lateness, outcomes = svgs
    assert lateness.count("<path ") == 3  # p50, p99, max
    assert "11:59 UTC, max: 1m 35s (3 started)" in lateness
    assert "11:59 UTC: 2 succeeded, 1 failed" in outcomes
    assert "<script" not in html and "on" + "load" not in html


def test_the_chart_says_so_when_the_hour_was_quiet() -> None:
    html = str(activity_svg([], NOW, HOUR))
    assert "<svg" not in html and "Nothing started or finished in the last hour" in html


async def test_the_overview_charts_a_payment_that_ran(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    quiet = await page(api, "/dashboard/chart")
    assert "Nothing started or finished in the last hour" in quiet
    pid = await schedule(api, **{"in": "200ms"})
    async with running(api.app):
        await all_final(api.app, [pid])
    overview = await page(api, "/dashboard/")
    assert 'hx-get="/dashboard/chart" hx-trigger="every 30s"' in overview
    chart = await page(api, "/dashboard/chart")
    assert "Last hour: 1 started" in chart and "1 succeeded, 0 failed" in chart
    assert chart.count("<svg") == 2
