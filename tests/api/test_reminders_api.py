"""Reminders over HTTP: a payment's `remind`, an account's default (POST and PATCH), and bad
values refused with 422 naming the field."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, problem
from tests.api.test_api import accounts

WEEKLY = {"from": "alice", "to": "bob", "amount": "5.00", "cron": "0 9 * * 1", "timezone": "UTC"}


async def test_remind_of_a_payment_and_of_an_account(api: Api) -> None:
    await accounts(api, {"bob": ""})
    made = await api.post("/v1/accounts", {"name": "alice", "remind": "24h"}, "write")
    assert made.status_code == 201 and made.json()["remind"] == "86400s"
    own = await api.post("/v1/payments", WEEKLY | {"remind": "90m"}, "write")
    assert own.status_code == 201, own.text
    assert own.json()["remind"] == "5400s"
    shown = await api.get(f"/v1/payments/{own.json()['id']}")
    assert shown.json()["remind"] == "5400s"
    default = await api.post("/v1/payments", WEEKLY, "write")
    assert default.json()["remind"] == "86400s"  # the payer's, copied
    off = await api.client.patch(
        "/v1/accounts/alice", json={"remind": None}, headers=api.auth("write")
    )
    assert off.status_code == 200 and off.json()["remind"] is None
    assert (await api.post("/v1/payments", WEEKLY, "write")).json()["remind"] is None
    assert (await api.get(f"/v1/payments/{default.json()['id']}")).json()["remind"] == "86400s"
    on = await api.client.patch(
        "/v1/accounts/alice", json={"remind": "2h"}, headers=api.auth("write")
    )
    assert on.json()["remind"] == "7200s"
    assert (await api.get("/v1/accounts/alice")).json()["remind"] == "7200s"
    ghost = await api.client.patch(
        "/v1/accounts/ghost", json={"remind": "2h"}, headers=api.auth("write")
    )
    problem(ghost, 404, "not_found")
    read_only = await api.client.patch(
        "/v1/accounts/alice", json={"remind": "2h"}, headers=api.auth("read")
    )
    assert read_only.status_code == 403


@pytest.mark.parametrize("value", ["0s", "500ms", "31d", "soon", "-1h", ""])
async def test_bad_remind_is_422_naming_the_field(api: Api, value: str) -> None:
    await accounts(api, {"alice": "", "bob": ""})
    problem(
        await api.post("/v1/payments", WEEKLY | {"remind": value}, "write"),
        422,
        "invalid_input",
        "remind",
    )
    problem(
        await api.post("/v1/accounts", {"name": "carol", "remind": value}, "write"),
        422,
        "invalid_input",
        "remind",
    )
    problem(
        await api.client.patch(
            "/v1/accounts/alice", json={"remind": value}, headers=api.auth("write")
        ),
        422,
        "invalid_input",
        "remind",
    )
