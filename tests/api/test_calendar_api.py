"""Calendar payments over HTTP: rules, business days, preview, pause / resume, skip-next."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, problem
from tests.api.test_api import accounts

LAST_BUSINESS_DAY = {
    "from": "alice", "to": "bob", "amount": "10.00", "rrule": "FREQ=MONTHLY;BYMONTHDAY=-1",
    "start": "2026-12-01T09:00", "timezone": "Europe/Berlin", "business_day": "preceding",
    "calendar": "DE",
}  # fmt: skip


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
    body = {"from": "alice", "to": "bob", "amount": "1.00", "every": "1 week",
            "start": "2030-01-07T09:00", "timezone": "UTC", "count": 4}  # fmt: skip
    pid = (await api.post("/v1/payments", body, "write")).json()["id"]
    first = (await api.get(f"/v1/payments/{pid}/preview", count=4)).json()
    assert [d["due_at"][:10] for d in first] == [
        "2030-01-07", "2030-01-14", "2030-01-21", "2030-01-28"]  # fmt: skip
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
