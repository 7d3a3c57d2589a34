"""Who acted: every action by a person — over the HTTP API, the dashboard, the Python API — is
recorded with its actor in the change's own transaction, logged, and shown (issue 22)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

import paysched
from paysched.actors import Actor
from paysched.db import tables as t
from paysched.db.actions import Acting, Subject
from paysched.db.apikeys import ApiKeys
from paysched.domain import OccurrenceState, PaymentState
from paysched.errors import PayschedError
from tests.api.conftest import Api, problem
from tests.api.test_api import accounts
from tests.api.test_dashboard import HX, needing_review, page, schedule, signed
from tests.conftest import wait_for
from tests.integration.helpers import all_final, running

WEEKLY = {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"}


async def key_ids(api: Api) -> dict[str, int]:
    """The test keys' ids by scope (conftest names them test-<scope>)."""
    keys = await api.app.db(ApiKeys(api.app.store.engine).list)
    return {k.scope: k.id for k in keys}


async def rows(api: Api, payment_id: int | None = None) -> list[Any]:
    """The actions table, oldest first (all of it, or one payment's)."""

    def read() -> list[Any]:
        query = select(t.actions).order_by(t.actions.c.id)
        if payment_id is not None:
            query = query.where(t.actions.c.payment_id == payment_id)
        with api.app.store.engine.connect() as conn:
            return list(conn.execute(query))

    return await api.app.db(read)


async def actions(api: Api, pid: int) -> list[dict[str, Any]]:
    r = await api.get(f"/v1/payments/{pid}")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["actions"]
    return found


def by_key(kid: int, name: str, via: str) -> dict[str, Any]:
    return {"actor": {"kind": "api_key", "api_key_id": kid, "name": name}, "via": via}


async def test_each_api_action_records_its_key_once(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "paysched.actions")
    ids = await key_ids(api)
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **WEEKLY)
    # Replayed with its idempotency key: one pause, one row, not two.
    for _ in range(2):
        r = await api.post(f"/v1/payments/{pid}/pause", None, "write", key="pause-1")
        assert r.status_code == 200, r.text
    # Refused (409: not paused any more after the resume): nothing recorded.
    assert (await api.post(f"/v1/payments/{pid}/resume", None, "write")).status_code == 200
    problem(await api.post(f"/v1/payments/{pid}/resume", None, "write"), 409, "conflict")
    skipped = await api.post(f"/v1/payments/{pid}/skip-next", None, "admin")
    assert skipped.status_code == 200, skipped.text
    assert (await api.post(f"/v1/payments/{pid}/cancel", None, "write")).status_code == 200
    problem(await api.post(f"/v1/payments/{pid}/cancel", None, "write"), 409, "conflict")

    listed = await actions(api, pid)
    assert [a["action"] for a in listed] == ["cancel", "skip_next", "resume", "pause", "create"]
    write, admin = (
        by_key(ids["write"], "test-write", "api"),
        by_key(ids["admin"], "test-admin", "api"),
    )
    assert [{k: a[k] for k in ("actor", "via")} for a in listed] == [
        write,
        admin,
        write,
        write,
        write,
    ]
    [occ] = [
        o
        for o in (await api.get(f"/v1/payments/{pid}")).json()["occurrences"]
        if o["key"] == skipped.json()["skipped"]
    ]
    assert listed[1]["occurrence_id"] == occ["id"]
    assert listed[0]["summary"] == f"cancelled by key #{ids['write']} test-write via api"
    ats = [datetime.fromisoformat(a["at"]) for a in listed]
    assert ats == sorted(ats, reverse=True)  # newest first
    # The accounts' own actions carry no payment.
    accounts_done = [(r.action, r.payment_id) for r in await rows(api) if r.payment_id is None]
    assert accounts_done == [("create_account", None), ("deposit", None), ("create_account", None)]
    # One log line per action, naming it, the payment and the key (never the key's secret).
    lines = [r.getMessage() for r in caplog.records if r.name == "paysched.actions"]
    assert f"pause payment {pid} by key #{ids['write']} test-write via api" in lines
    assert len([line for line in lines if line.startswith("pause")]) == 1
    assert f"cancel payment {pid} by key #{ids['write']} test-write via api" in lines
    for key in api.keys.values():
        assert all(key.split("_", 2)[2] not in line for line in lines)


async def test_a_manual_resolve_keeps_its_reason_and_its_key(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "paysched.actions")
    ids = await key_ids(api)
    pid, occ = await needing_review(api)
    body = {"outcome": "retry", "reason": "the provider never got it"}
    r = await api.post(f"/v1/occurrences/{occ.key}/resolve", body, "admin")
    assert r.status_code == 200, r.text
    resolved, _ = await actions(api, pid)
    assert resolved["action"] == "resolve" and resolved["occurrence_id"] == occ.id
    assert resolved["detail"] == {"outcome": "retry", "reason": "the provider never got it"}
    assert resolved["actor"] == {
        "kind": "api_key",
        "api_key_id": ids["admin"],
        "name": "test-admin",
    }
    # Refused (it is queued now, not unresolved): nothing more recorded.
    r = await api.post(f"/v1/occurrences/{occ.key}/resolve", body, "admin")
    problem(r, 409, "conflict")
    assert len(await actions(api, pid)) == 2
    # The log names outcome and key; the reason stays in the history.
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resolve")]
    assert line == (
        f"resolve payment {pid} occurrence {occ.id} by key #{ids['admin']} "
        "test-admin via api outcome=retry"
    )


async def test_dashboard_actions_record_the_signed_in_key_and_show_it(api: Api) -> None:
    ids = await key_ids(api)
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **WEEKLY)
    for action in ("pause", "resume"):
        r = await api.client.post(
            f"/dashboard/payments/{pid}/{action}", headers=signed(api, "write") | HX
        )
        assert r.status_code == 200, r.text
    refused = await api.client.post(
        f"/dashboard/payments/{pid}/resume", headers=signed(api, "write") | HX
    )
    assert refused.status_code == 409
    r = await api.client.post(
        f"/dashboard/payments/{pid}/cancel", headers=signed(api, "admin") | HX
    )
    assert r.status_code == 200, r.text
    listed = await actions(api, pid)
    assert [(a["action"], a["via"], a["actor"]["api_key_id"]) for a in listed] == [
        ("cancel", "dashboard", ids["admin"]),
        ("resume", "dashboard", ids["write"]),
        ("pause", "dashboard", ids["write"]),
        ("create", "api", ids["write"]),
    ]
    text = await page(api, f"/dashboard/payments/{pid}")
    timeline = text.split("<h2>Actions</h2>", 1)[1].split("</section>", 1)[0]
    assert f"cancelled by key #{ids['admin']} test-admin via dashboard at" in timeline
    assert f"paused by key #{ids['write']} test-write via dashboard at" in timeline
    assert timeline.index("cancelled by") < timeline.index("created by")


async def test_a_dashboard_resolve_shows_its_reason(api: Api) -> None:
    ids = await key_ids(api)
    pid, occ = await needing_review(api)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await api.client.post(
        f"/dashboard/occurrences/{occ.id}/resolve",
        content="outcome=retry&reason=%3Cb%3Eback%3C%2Fb%3E",
        headers=signed(api, "admin") | HX | form,
    )
    assert r.status_code == 200, r.text
    resolved = (await actions(api, pid))[0]
    assert resolved["via"] == "dashboard" and resolved["detail"]["reason"] == "<b>back</b>"
    text = await page(api, f"/dashboard/payments/{pid}")
    assert f"resolved as retry by key #{ids['admin']} test-admin via dashboard" in text
    assert "&lt;b&gt;back&lt;/b&gt;" in text and "<b>back</b>" not in text


async def test_a_notification_sent_again_records_who(api: Api) -> None:
    ids = await key_ids(api)
    await accounts(api, {"alice": "10.00", "bob": ""})
    r = await api.post(
        "/v1/payments",
        {"from": "alice", "to": "bob", "amount": "1.00", "in": "200ms", "notify": ["telegram:123"]},
    )
    pid = r.json()["id"]
    outbox = api.app.outbox
    assert outbox is not None

    async def dead() -> bool:
        return [n.state for n in await api.app.db(outbox.list, None, pid)] == ["dead"]

    async with running(api.app):
        await all_final(api.app, [pid])
        await wait_for(dead, what="the notification to be dead")
    [sent] = await api.app.db(outbox.list, None, pid)
    r = await api.client.post(
        f"/dashboard/notifications/{sent.id}/retry", headers=signed(api, "write") | HX
    )
    assert r.status_code == 200, r.text
    # Pending now, not dead: refused over the API, and not recorded.
    problem(await api.post(f"/v1/notifications/{sent.id}/retry", None, "write"), 409, "conflict")
    retried, created = await actions(api, pid)
    assert retried["action"] == "retry_notification" and created["action"] == "create"
    assert retried["detail"] == {"notification": sent.id}
    assert retried["actor"]["api_key_id"] == ids["write"] and retried["via"] == "dashboard"


async def test_concurrent_creates_with_one_key_record_one_creator(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    body = {"from": "alice", "to": "bob", "amount": "1.00", "in": "1h"}
    answers = await asyncio.gather(
        *(api.post("/v1/payments", body, "write", key="race") for _ in range(4))
    )
    [pid] = {r.json()["id"] for r in answers if r.status_code == 201}
    assert [(r.action, r.payment_id) for r in await rows(api) if r.action == "create"] == [
        ("create", pid)
    ]


async def test_a_change_that_fails_after_its_actor_records_neither(api: Api) -> None:
    """The actor's row and the change are one transaction: a hook that fails after the row
    was written (as an idempotency record could) leaves the payment as it was, and no row."""
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **WEEKLY)
    app = api.app

    def fails(_conn: object, _result: object) -> None:
        raise PayschedError("the idempotency record could not be written")

    acting = Acting(Actor.python(), "pause", app.clock.now(), lambda _: Subject(pid))
    with pytest.raises(PayschedError):
        await app.db(app.store.control.pause, pid, app.clock.now(), acting.then(fails))
    assert (await app.db(app.store.payments.get_payment, pid)).state == PaymentState.ACTIVE
    assert [r.action for r in await rows(api, pid)] == ["create"]


async def test_actions_page_newest_first(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **WEEKLY)
    for _ in range(2):
        for action in ("pause", "resume"):
            assert (await api.post(f"/v1/payments/{pid}/{action}", None, "write")).is_success
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = await api.get(f"/v1/payments/{pid}/actions", **params)
        assert r.status_code == 200, r.text
        seen += [a["action"] for a in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        assert r.json()["has_more"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == ["resume", "pause", "resume", "pause", "create"]
    problem(await api.get("/v1/payments/999999/actions"), 404, "not_found")
    problem(await api.get(f"/v1/payments/{pid}/actions", cursor="nope"), 422, "invalid_cursor")


async def test_the_python_api_records_python(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    ps = paysched.Paysched(api.app)
    payment = await ps.schedule(payer="alice", payee="bob", amount="1.00", in_="1h")
    await ps.cancel(payment.id)
    listed = await actions(api, payment.id)
    assert [(a["action"], a["via"], a["actor"]["kind"]) for a in listed] == [
        ("cancel", "python", "python"),
        ("create", "python", "python"),
    ]
    assert listed[0]["actor"]["name"].startswith("python")


async def test_a_system_action_records_no_one(api: Api) -> None:
    """The scheduler and workers act for nobody: a payment that runs adds no action."""
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = await schedule(api, **{"in": "100ms"})
    async with running(api.app):
        await all_final(api.app, [pid])
    [occ] = await api.app.db(api.app.store.reads.occurrences_of, pid)
    assert occ.state == OccurrenceState.SUCCEEDED
    assert [r.action for r in await rows(api, pid)] == ["create"]
