"""Approvals over HTTP: POST /v1/payments with `approval`, and
POST /v1/occurrences/{ref}/approve | reject (scope approve, four eyes, once)."""

from __future__ import annotations

import httpx
import pytest

from paysched.db.apikeys import ApiKeys
from tests.api.conftest import Api, problem
from tests.integration.helpers import all_final, running

PAYMENT = {"from": "alice", "to": "bob", "amount": "12.00", "in": "0s", "approval": "required"}


async def setup(api: Api) -> None:
    keys = ApiKeys(api.app.store.engine)
    for name in ("approve", "approve2"):
        api.keys[name] = (await api.app.db(keys.create, name, "approve", api.app.clock.now()))[1]
    for name, amount in (("alice", "100.00"), ("bob", "")):
        assert (await api.post("/v1/accounts", {"name": name}, "write")).status_code == 201
        if amount:
            r = await api.post(f"/v1/accounts/{name}/deposits", {"amount": amount}, "write")
            assert r.status_code == 200


async def awaiting(api: Api, scope: str = "write", **extra: object) -> dict[str, object]:
    r = await api.post("/v1/payments", PAYMENT | extra, scope)
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["approval"], created["approval_timeout"], created["on_timeout"]) == (
        "required",
        extra.get("approval_timeout") and "7200s",
        extra.get("on_timeout") or ("skip" if "approval_timeout" in extra else None),
    )
    [occ] = (await api.get(f"/v1/payments/{created['id']}")).json()["occurrences"]
    assert occ["state"] == "awaiting_approval", occ
    return occ  # type: ignore[no-any-return]


async def test_approve_over_http_runs_it_once(api: Api) -> None:
    await setup(api)
    occ = await awaiting(api, approval_timeout="2h")
    assert occ["approval_deadline"] is not None
    # write may create, not decide
    problem(
        await api.post(f"/v1/occurrences/{occ['key']}/approve", None, "write"),
        403,
        "insufficient_scope",
    )
    r = await api.post(f"/v1/occurrences/{occ['key']}/approve", None, "approve", key="a-1")
    assert r.status_code == 200, r.text
    # With an Idempotency-Key the answer is what its transaction committed: approved, then
    # queued right after.
    assert r.json() == {"occurrence": occ["key"], "state": "scheduled"}
    again = await api.post(f"/v1/occurrences/{occ['key']}/approve", None, "approve", key="a-1")
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == r.json()
    body = problem(
        await api.post(f"/v1/occurrences/{occ['id']}/approve", None, "approve2"), 409, "conflict"
    )
    assert "already approved" in body["detail"]
    async with running(api.app):
        await all_final(api.app, [int(occ["payment_id"])])  # type: ignore[call-overload]
    assert (await api.get("/v1/accounts/bob")).json()["balance"] == "12.00"
    detail = (await api.get(f"/v1/payments/{occ['payment_id']}")).json()
    assert [a["action"] for a in detail["actions"]] == ["approve", "create"]
    assert detail["actions"][0]["summary"].startswith("approved an occurrence by key #")


async def test_reject_over_http_cancels_it_and_needs_a_reason(api: Api) -> None:
    await setup(api)
    occ = await awaiting(api)
    path = f"/v1/occurrences/{occ['key']}/reject"
    problem(await api.post(path, {}, "approve"), 422, "invalid_input", "reason")
    r = await api.post(path, {"reason": "duplicate invoice"}, "approve")
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    problem(
        await api.post(f"/v1/occurrences/{occ['key']}/approve", None, "approve2"), 409, "conflict"
    )
    got = (await api.get(f"/v1/occurrences/{occ['key']}")).json()
    assert got["reason"].endswith(": duplicate invoice")
    assert got["history"][-1]["from"] == "awaiting_approval"
    assert (await api.get("/v1/accounts/alice")).json()["balance"] == "100.00"


async def test_four_eyes_the_creating_key_cannot_approve(api: Api) -> None:
    await setup(api)
    occ = await awaiting(api, scope="approve")  # approve keys may create too
    body = problem(
        await api.post(f"/v1/occurrences/{occ['key']}/approve", None, "approve"), 409, "conflict"
    )
    assert "four eyes" in body["detail"]
    problem(
        await api.post(f"/v1/occurrences/{occ['key']}/reject", {"reason": "x"}, "approve"),
        409,
        "conflict",
    )
    r = await api.post(f"/v1/occurrences/{occ['key']}/approve", None, "approve2")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"approval": "maybe"}, "approval"),
        ({"on_timeout": "later", "approval_timeout": "1h"}, "on_timeout"),
        ({"on_timeout": "fail"}, "on_timeout"),  # without a timeout
        ({"approval_timeout": "soon"}, "approval_timeout"),
        ({"approval_timeout": "0s"}, "approval_timeout"),
    ],
)
async def test_bad_approval_input_is_422_naming_the_field(
    api: Api, extra: dict[str, object], field: str
) -> None:
    await setup(api)
    problem(await api.post("/v1/payments", PAYMENT | extra, "write"), 422, "invalid_input", field)


async def test_dashboard_approve_and_reject_buttons(api: Api) -> None:
    from tests.api.test_dashboard import HX, page, signed

    await setup(api)
    occ = await awaiting(api, approval_timeout="2h")
    detail = f"/dashboard/payments/{occ['payment_id']}"
    approve = f"/dashboard/occurrences/{occ['id']}/approve"
    reject = f"/dashboard/occurrences/{occ['id']}/reject"
    shown = await page(api, detail, "approve")
    assert f'hx-post="{approve}"' in shown and f'hx-post="{reject}"' in shown
    assert "Approval</dt><dd>required; unanswered 7200s after due: skip" in shown
    assert "needs a key with the approve scope" in await page(api, detail, "write")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    denied = await api.client.post(approve, content="", headers=signed(api, "write") | HX | form)
    assert denied.status_code == 403
    r = await api.client.post(
        reject, content="reason=+", headers=signed(api, "approve") | HX | form
    )
    assert r.status_code == 422 and "reason" in r.text, r.text
    r = await api.client.post(approve, content="", headers=signed(api, "approve") | HX | form)
    assert r.status_code == 200 and "approved: it runs at its due time" in r.text, r.text
    again = await api.client.post(approve, content="", headers=signed(api, "approve2") | HX | form)
    assert again.status_code == 409 and "already approved" in again.text
    assert f'hx-post="{approve}"' not in await page(api, detail, "approve")
    # The key that created a payment may not decide on it, from the dashboard either.
    mine = await awaiting(api, scope="approve")
    mine_path = f"/dashboard/occurrences/{mine['id']}/approve"
    r = await api.client.post(mine_path, content="", headers=signed(api, "approve") | HX | form)
    assert r.status_code == 409 and "four eyes" in r.text


async def test_an_accounts_approval_rule_over_patch(api: Api) -> None:
    """PATCH /v1/accounts/{name} sets and clears `approval_above`; the payments created after
    it above the amount await approval, those at or below it and those before it do not; a
    PATCH changes only the fields it gives, and a bad amount changes nothing."""
    await setup(api)
    one_time = {"from": "alice", "to": "bob", "in": "1h"}

    async def patch(body: dict[str, object], scope: str = "write") -> httpx.Response:
        return await api.client.patch("/v1/accounts/alice", json=body, headers=api.auth(scope))

    remind = await patch({"remind": "2h"})
    assert remind.status_code == 200
    r = await patch({"approval_above": "50.00"})
    assert r.status_code == 200, r.text
    assert r.json()["approval_above"] == "50.00"
    assert r.json()["remind"] == "7200s"
    above = await api.post("/v1/payments", one_time | {"amount": "50.01"}, "write")
    at = await api.post("/v1/payments", one_time | {"amount": "50.00"}, "write")
    assert above.json()["approval"] == "required", above.text
    assert at.json()["approval"] == "none", at.text
    refusals: list[dict[str, object]] = [
        {"approval_above": "12.345"},  # more decimals than USD has
        {"approval_above": "-1"},
        {"approval_above": "lots"},
        {"remind": "3h", "approval_above": "x"},  # nothing written: the remind stays 2h
        {},
    ]
    for bad in refusals:
        refused = await patch(bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["code"] == "invalid_input"
        assert refused.json()["field"] in ("approval_above", "remind")
    shown = (await api.get("/v1/accounts/alice")).json()
    assert (shown["approval_above"], shown["remind"]) == ("50.00", "7200s")
    problem(
        await api.client.patch(
            "/v1/accounts/ghost", json={"approval_above": "1.00"}, headers=api.auth("write")
        ),
        404,
        "not_found",
    )
    assert (await patch({"approval_above": "1.00"}, "read")).status_code == 403
    off = await patch({"approval_above": None})
    assert off.json()["approval_above"] is None
    after = await api.post("/v1/payments", one_time | {"amount": "99.00"}, "write")
    assert after.json()["approval"] == "none"
    # The rule's changes are in the action log with the key that made them.
    log = (await api.get("/v1/actions", action="set_account", limit=50)).json()["data"]
    assert {str(a["detail"].get("approval_above")) for a in log} >= {"5000", "off"}
