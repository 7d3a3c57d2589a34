"""Calendar payments over HTTP: rules, business days, preview, pause / resume, skip-next."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from paysched import recurrence
from paysched.recurrence import DATE_BUDGET, REQUEST_BUDGET
from tests.api.conftest import Api, problem
from tests.api.test_api import accounts
from tests.unit.test_recurrence import NEVER, SPARSE, walked

LAST_BUSINESS_DAY = {
    "from": "alice",
    "to": "bob",
    "amount": "10.00",
    "rrule": "FREQ=MONTHLY;BYMONTHDAY=-1",
    "start": "2026-12-01T09:00",
    "timezone": "Europe/Berlin",
    "business_day": "preceding",
    "calendar": "DE",
}


async def test_last_business_day_of_the_month(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    r = await api.post("/v1/payments", LAST_BUSINESS_DAY, "write", key="salary")
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["recurrence"]["rrule"] == "FREQ=MONTHLY;BYMONTHDAY=-1"
    assert "last day" in created["schedule"] and "(DE)" in created["schedule"]
    dues = (await api.get(f"/v1/payments/{created['id']}/preview", count=3)).json()
    # Jan 31 2027 is a Sunday: Friday Jan 29 at 09:00 Berlin (08:00 UTC), its rule date kept.
    later = [d for d in dues if d["nominal_at"].startswith("2027-01-31")]
    assert later and later[0]["due_at"].startswith("2027-01-29T08:00")


async def test_pause_resume_and_skip_next(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    body = {
        "from": "alice",
        "to": "bob",
        "amount": "1.00",
        "every": "1 week",
        "start": "2030-01-07T09:00",
        "timezone": "UTC",
        "count": 4,
    }
    pid = (await api.post("/v1/payments", body, "write")).json()["id"]
    first = (await api.get(f"/v1/payments/{pid}/preview", count=4)).json()
    assert [d["due_at"][:10] for d in first] == [
        "2030-01-07",
        "2030-01-14",
        "2030-01-21",
        "2030-01-28",
    ]
    paused = await api.post(f"/v1/payments/{pid}/pause", None, "write")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    problem(await api.post(f"/v1/payments/{pid}/pause", None, "write"), 409, "conflict")
    resumed = await api.post(f"/v1/payments/{pid}/resume", None, "write", key="r1")
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    again = await api.post(f"/v1/payments/{pid}/resume", None, "write", key="r1")
    assert again.json() == resumed.json() and again.headers["idempotent-replayed"] == "true"
    skipped = (await api.post(f"/v1/payments/{pid}/skip-next", None, "write")).json()
    assert skipped["due_at"].startswith("2030-01-07")
    after = (await api.get(f"/v1/payments/{pid}/preview", count=4)).json()
    assert [d["due_at"][:10] for d in after] == ["2030-01-14", "2030-01-21", "2030-01-28"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rrule": "FREQ=HOURLY"}, "rrule"),
        ({"rrule": "FREQ=MONTHLY;BYMONTHDAY=30;BYMONTH=2"}, "rrule"),
        ({"start": None}, "start"),
        ({"calendar": "XX"}, "calendar"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"business_day": "sometimes"}, "business_day"),
        ({"every": "2 weeks"}, "rrule"),  # both a rule and an interval
        ({"catchup": "some"}, "catchup"),
        ({"catchup_window": "0s"}, "catchup_window"),
    ],
)
async def test_impossible_rules_are_422_naming_the_field(
    api: Api, change: dict[str, object], field: str
) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    body = {k: v for k, v in (LAST_BUSINESS_DAY | change).items() if v is not None}
    problem(await api.post("/v1/payments", body, "write"), 422, "invalid_input", field)


# --- the work budget (issue 19, finding 8) -----------------------------------------------------


async def test_a_rule_without_dates_is_422_within_the_budget(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    with walked() as months:
        r = await api.post("/v1/payments", LAST_BUSINESS_DAY | {"rrule": NEVER}, "write")
    assert "search budget" in problem(r, 422, "invalid_input", "rrule")["detail"]
    assert months[0] <= DATE_BUDGET + 1  # was a walk to the year 9999: 95,688 months


async def test_a_preview_past_the_request_budget_is_422_naming_count(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    body = LAST_BUSINESS_DAY | {"rrule": SPARSE, "business_day": "none"}
    created = await api.post("/v1/payments", body, "write")
    assert created.status_code == 201, created.text
    path = f"/v1/payments/{created.json()['id']}/preview"
    few = (await api.get(path, count=2)).json()
    assert [d["nominal_at"][:10] for d in few] == ["2044-02-29", "2072-02-29"]
    with walked() as months:
        r = await api.get(path, count=1000)
    assert "search budget" in problem(r, 422, "invalid_input", "count")["detail"]
    assert months[0] <= REQUEST_BUDGET + 1  # was 83,786 months, one date at a time


async def test_healthz_answers_while_a_rule_is_checked(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule check of a create runs on the thread pool: held there, the event loop goes on
    answering; on the loop it would hold every request until it ended."""
    await accounts(api, {"alice": "100.00", "bob": ""})
    reached, release = threading.Event(), threading.Event()
    check = recurrence.parse_recurrence

    def held(*args: Any, **kwargs: Any) -> recurrence.Recurrence:
        reached.set()
        release.wait(timeout=30)  # released below; the timeout only ends a broken run
        return check(*args, **kwargs)

    monkeypatch.setattr(recurrence, "parse_recurrence", held)
    create = asyncio.create_task(
        api.post("/v1/payments", LAST_BUSINESS_DAY | {"rrule": NEVER}, "write")
    )
    assert await asyncio.to_thread(reached.wait, 30)
    health = await api.client.get("/healthz")
    checking = not create.done()
    release.set()
    assert health.status_code == 200 and checking
    problem(await create, 422, "invalid_input", "rrule")
