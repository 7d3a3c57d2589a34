"""The HTTP API end to end over a real App: resources, keys and scopes, idempotency, problems,
pagination, metrics."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from paysched.api.pages import encode
from paysched.clock import to_ms
from paysched.db.apikeys import ApiKeys
from tests.api.conftest import Api, problem
from tests.integration.helpers import all_final, running


async def accounts(api: Api, balances: dict[str, str]) -> None:
    for name, amount in balances.items():
        assert (await api.post("/v1/accounts", {"name": name}, "write")).status_code == 201
        if amount:
            r = await api.post(f"/v1/accounts/{name}/deposits", {"amount": amount}, "write")
            assert r.status_code == 200 and r.json()["balance"] == amount


async def test_a_payment_scheduled_over_http_runs_once_and_shows_its_history(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    body = {"from": "alice", "to": "bob", "amount": "12.34", "in": "200ms", "memo": "rent"}
    r = await api.post("/v1/payments", body, "write", key="p-1")
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["amount"] == "12.34" and created["currency"] == "USD"
    # Its one occurrence exists at once: the series is done, the payment is not paid yet.
    [listed] = (await api.get("/v1/payments")).json()["data"]
    assert (listed["state"], listed["status"]) == ("done", "pending")
    async with running(api.app):
        await all_final(api.app, [created["id"]])
    detail = (await api.get(f"/v1/payments/{created['id']}")).json()
    assert detail["status"] == "succeeded"
    [listed] = (await api.get("/v1/payments")).json()["data"]
    assert listed["status"] == "succeeded"
    [occ] = detail["occurrences"]
    assert occ["state"] == "succeeded" and occ["lateness_ms"] is not None
    assert [a["outcome"] for a in occ["attempts"]] == ["succeeded"]
    assert (await api.get("/v1/accounts/bob")).json()["balance"] == "12.34"
    assert (await api.get("/v1/accounts/alice")).json()["balance"] == "87.66"
    by_key = (await api.get(f"/v1/occurrences/{occ['key']}")).json()
    by_id = (await api.get(f"/v1/occurrences/{occ['id']}")).json()
    assert by_key == by_id and by_key["history"][-1]["to"] == "succeeded"
    stats = (await api.get("/v1/stats")).json()
    assert stats["occurrences"]["succeeded"] == 1 and stats["queue"]["completed"] == 1
    assert set(stats) == {"queue", "occurrences", "notifications", "processes"}


async def test_recurring_payment_and_cancel(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    body = {
        "from": "alice",
        "to": "bob",
        "amount": "1.00",
        "cron": "0 9 * * 1",
        "timezone": "Europe/Berlin",
    }
    r = await api.post("/v1/payments", body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.json()["cron"] == "0 9 * * 1" and r.json()["next_due_at"]
    cancelled = await api.post(f"/v1/payments/{pid}/cancel", None, "write")
    assert cancelled.status_code == 200 and cancelled.json()["id"] == pid
    problem(await api.post(f"/v1/payments/{pid}/cancel", None, "write"), 409, "conflict")
    assert (await api.get(f"/v1/payments/{pid}")).json()["status"] == "cancelled"
    assert [p["status"] for p in (await api.get("/v1/payments")).json()["data"]] == ["cancelled"]


# -- keys and scopes ---------------------------------------------------------------------------


async def test_every_v1_route_needs_a_key(api: Api) -> None:
    for method, path in [
        ("GET", "/v1/accounts"),
        ("GET", "/v1/payments"),
        ("GET", "/v1/stats"),
        ("POST", "/v1/payments"),
        ("GET", "/v1/occurrences/1"),
        ("GET", "/v1/notifications"),
        ("GET", "/metrics"),
    ]:
        r = await api.client.request(method, path)
        problem(r, 401, "unauthenticated", "Authorization")
        assert r.headers["www-authenticate"].startswith("Bearer")
    bad = await api.client.get("/v1/accounts", headers={"Authorization": "Bearer psk_nope_x"})
    problem(bad, 401, "invalid_key")
    for path in ("/healthz", "/readyz"):
        assert (await api.client.get(path)).status_code == 200


async def test_scopes_nest_and_are_enforced(api: Api) -> None:
    problem(await api.post("/v1/accounts", {"name": "x"}, "read"), 403, "insufficient_scope")
    assert (await api.post("/v1/accounts", {"name": "x"}, "write")).status_code == 201
    assert (await api.get("/v1/accounts/x", "admin")).status_code == 200
    resolve = await api.post(
        "/v1/occurrences/1/resolve", {"outcome": "failed", "reason": "r"}, "write"
    )
    problem(resolve, 403, "insufficient_scope")


async def test_a_revoked_key_is_refused_at_its_next_request(api: Api) -> None:
    keys = ApiKeys(api.app.store.engine)
    row, key = await api.app.db(keys.create, "short-lived", "read", api.app.clock.now())
    headers = {"Authorization": f"Bearer {key}"}
    assert (await api.client.get("/v1/accounts", headers=headers)).status_code == 200
    assert (await api.app.db(keys.get, row.id)).last_used_at is not None
    await api.app.db(keys.revoke, row.id, api.app.clock.now())
    problem(await api.client.get("/v1/accounts", headers=headers), 401, "invalid_key")


async def test_a_payment_detail_is_read_on_one_connection(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    body = {"from": "alice", "to": "bob", "amount": "1.00", "in": "200ms", "memo": "one read"}
    created = (await api.post("/v1/payments", body, "write")).json()
    assert (await api.get("/v1/accounts")).status_code == 200  # the read key's first use noted
    checkouts: list[object] = []

    def checkout(*_: object) -> None:
        checkouts.append(_)

    engine = api.app.store.engine
    event.listen(engine, "checkout", checkout)
    try:
        detail = (await api.get(f"/v1/payments/{created['id']}")).json()
    finally:
        event.remove(engine, "checkout", checkout)
    # The key's lookup (revocation takes effect at the next request: never cached), then the
    # payment, occurrences, their transitions and notifications: one checkout, one snapshot
    # (four before, each a ping, BEGIN and ROLLBACK around its query).
    assert len(checkouts) == 2
    assert detail["id"] == created["id"] and detail["occurrences"]
    assert all(o["history"] for o in detail["occurrences"])


async def test_keys_are_stored_hashed(api: Api) -> None:
    from sqlalchemy import text

    with api.app.store.engine.connect() as conn:
        stored = " ".join(
            str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row
        )
    for key in api.keys.values():
        assert key not in stored and key.split("_", 2)[2] not in stored


async def test_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    api.api.state.guard.limiter.rate = 1
    api.api.state.guard.limiter._buckets.clear()
    statuses = [(await api.get("/v1/accounts")).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and 429 in statuses
    r = await api.get("/v1/accounts")
    problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1


# -- idempotency -------------------------------------------------------------------------------

PAYMENT = {"from": "alice", "to": "bob", "amount": "5.00", "in": "1h"}


async def test_a_replay_returns_the_first_answer_and_changes_nothing(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    first = await api.post("/v1/payments", PAYMENT, "write", key="same")
    again = await api.post("/v1/payments", PAYMENT, "write", key="same")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    listed = (await api.get("/v1/payments")).json()["data"]
    assert [p["id"] for p in listed] == [first.json()["id"]]
    deposit = await api.post("/v1/accounts/alice/deposits", {"amount": "1.00"}, "write", key="d")
    deposit_again = await api.post(
        "/v1/accounts/alice/deposits", {"amount": "1.00"}, "write", key="d"
    )
    assert (
        deposit.json()
        == deposit_again.json()
        == {"name": "alice", "currency": "USD", "balance": "11.00", "remind": None}
    )
    assert (await api.get("/v1/accounts/alice")).json()["balance"] == "11.00"


async def test_the_same_key_with_another_body_is_422(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    assert (await api.post("/v1/payments", PAYMENT, "write", key="k")).status_code == 201
    other = await api.post("/v1/payments", PAYMENT | {"amount": "6.00"}, "write", key="k")
    problem(other, 422, "idempotency_key_reused", "Idempotency-Key")
    elsewhere = await api.post("/v1/accounts", {"name": "carol"}, "write", key="k")
    problem(elsewhere, 422, "idempotency_key_reused")


async def test_keys_belong_to_their_api_key(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    mine = await api.post("/v1/payments", PAYMENT, "write", key="k")
    theirs = await api.post("/v1/payments", PAYMENT, "admin", key="k")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


async def test_a_failed_request_leaves_its_key_free(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    bad = await api.post("/v1/payments", PAYMENT | {"to": "nobody"}, "write", key="k2")
    problem(bad, 422, "invalid_input", "to")
    # The corrected request is another body: it may use the key, since nothing was stored.
    assert (await api.post("/v1/payments", PAYMENT, "write", key="k2")).status_code == 201


async def test_two_concurrent_requests_with_one_key_create_one_payment(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    answers = await asyncio.gather(
        *(api.post("/v1/payments", PAYMENT, "write", key="race") for _ in range(6))
    )
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {201, 409}, [r.text for r in answers]
    created = {r.json()["id"] for r in answers if r.status_code == 201}
    assert len(created) == 1
    for r in answers:
        if r.status_code == 409:
            problem(r, 409, "idempotency_key_in_use", "Idempotency-Key")
            assert int(r.headers["retry-after"]) >= 1
    payments = await api.app.db(api.app.store.payments.list_payments, 100)
    assert [p.id for p in payments] == list(created)


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there"])
async def test_a_malformed_idempotency_key_is_422(api: Api, key: str) -> None:
    r = await api.client.post(
        "/v1/accounts", json={"name": "a"}, headers=api.auth("write") | {"Idempotency-Key": key}
    )
    problem(r, 422, "invalid_input", "Idempotency-Key")


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 12.34}, "amount"),  # a JSON number, not a decimal string
        ({"amount": "12.345"}, "amount"),  # more decimals than USD has
        ({"amount": "0"}, "amount"),
        ({"currency": "XXX"}, "currency"),
        ({"in": None, "at": "2020-01-01T00:00:00Z"}, "at"),  # in the past
        ({"in": None, "at": "2030-01-01T00:00:00"}, "at"),  # no offset
        ({"cron": "0 9 * * 1"}, "schedule"),  # two schedules
        ({"in": None}, "schedule"),  # none
        ({"in": "soon"}, "in"),
        ({"in": None, "cron": "61 * * * *"}, "cron"),
        ({"timezone": "Europe/Berlin"}, "timezone"),  # without cron
        ({"notify": ["webhook:http://127.0.0.1/hook"]}, "notify"),  # internal address
        ({"from": "bob"}, "to"),
        ({"from": "@external:USD"}, "from"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_payment_input_is_422_naming_the_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    merged = {k: v for k, v in (PAYMENT | body).items() if v is not None}
    problem(await api.post("/v1/payments", merged, "write"), 422, "invalid_input", field)
    assert await api.app.db(api.app.store.payments.list_payments, 10) == []


async def test_not_found_and_malformed_ids(api: Api) -> None:
    problem(await api.get("/v1/payments/999"), 404, "not_found")
    problem(await api.get(f"/v1/payments/{2**40}"), 404, "not_found")
    problem(await api.get("/v1/payments/abc"), 422, "invalid_input", "payment_id")
    problem(await api.get("/v1/accounts/nobody"), 404, "not_found")
    problem(await api.get("/v1/occurrences/pay-1-2"), 404, "not_found")
    problem(await api.post("/v1/notifications/7/retry", None, "write"), 404, "not_found")
    problem(await api.get("/v1/nothing-here"), 404, "not_found")
    problem(await api.get("/v1/payments", cursor="%%%"), 422, "invalid_cursor", "cursor")
    problem(await api.get("/v1/payments", state="paid"), 422, "invalid_input", "state")
    problem(await api.get("/v1/payments", limit=0), 422, "invalid_input", "limit")


async def test_a_body_that_is_not_json_is_refused(api: Api) -> None:
    r = await api.client.post(
        "/v1/accounts",
        content="name=a",
        headers=api.auth("write") | {"Content-Type": "application/x-www-form-urlencoded"},
    )
    problem(r, 415, "unsupported_media_type", "Content-Type")
    r = await api.client.post(
        "/v1/accounts",
        content="{",
        headers=api.auth("write") | {"Content-Type": "application/json"},
    )
    assert r.status_code == 422


# -- lists -------------------------------------------------------------------------------------


async def test_cursor_pages_walk_every_row_once(api: Api) -> None:
    names = [f"acct-{i:02d}" for i in range(7)]
    await accounts(api, dict.fromkeys(names, ""))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/v1/accounts", **params)).json()
        seen += [a["name"] for a in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == names


async def test_payment_and_occurrence_filters(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": "100.00", "carol": ""})
    ids = []
    for payer, minutes in (("alice", 10), ("bob", 20), ("alice", 30)):
        body = {"from": payer, "to": "carol", "amount": "1.00", "in": f"{minutes}s"}
        ids.append((await api.post("/v1/payments", body, "write")).json()["id"])
    from_alice = (await api.get("/v1/payments", **{"from": "alice"})).json()["data"]
    assert [p["id"] for p in from_alice] == [ids[2], ids[0]]  # newest first
    pages = [(await api.get("/v1/payments", limit=1)).json()]
    while pages[-1]["has_more"]:
        cursor = pages[-1]["next_cursor"]
        pages.append((await api.get("/v1/payments", limit=1, cursor=cursor)).json())
    assert [p["data"][0]["id"] for p in pages] == ids[::-1]
    occs = (await api.get("/v1/occurrences", state="queued")).json()["data"]
    assert [o["payment_id"] for o in occs] == ids  # earliest due first
    now = api.app.clock.now()
    since, until = now + timedelta(seconds=15), now + timedelta(seconds=25)
    window = (
        await api.get("/v1/occurrences", due_from=since.isoformat(), due_before=until.isoformat())
    ).json()
    assert [o["payment_id"] for o in window["data"]] == [ids[1]]
    mine = (await api.get("/v1/occurrences", payment_id=ids[2])).json()["data"]
    assert [o["payment_id"] for o in mine] == [ids[2]]


async def test_occurrence_pages_keep_the_due_times_microseconds(api: Api) -> None:
    """Regression: the cursor held the last due time in milliseconds while due times keep
    microseconds, so the next page started before rows due later within that millisecond and
    showed them again. Here five occurrences fall due within one millisecond, each later one
    created first (a smaller id), and pages of two walk them exactly once."""
    app = api.app
    await accounts(api, {"alice": "100.00", "bob": ""})
    now = app.clock.now()
    base = (now + timedelta(hours=1)).replace(microsecond=0)
    for micros in (5, 4, 3, 2, 1):
        p = await app.db(
            app.store.payments.create_payment,
            payer="alice",
            payee="bob",
            amount=100,
            currency="USD",
            due_at=base + timedelta(microseconds=micros),
            cron=None,
            timezone=None,
            memo="",
            now=now,
        )
        await app.db(app.store.payments.materialize_due, now, base + timedelta(seconds=1), [p.id])
    stored = await app.db(app.store.reads.list_occurrences, 10)
    assert [o.due_at - base for o in stored] == [timedelta(microseconds=m) for m in range(1, 6)]
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(5):  # three pages; a cursor that goes back would page on and on
        page = (await api.get("/v1/occurrences", **params)).json()
        seen += [o["id"] for o in page["data"]]
        if not page["has_more"]:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [o.id for o in stored]
    # A cursor of the old form (milliseconds) is refused, not read as another position.
    old = encode([to_ms(base), stored[0].id])
    problem(await api.get("/v1/occurrences", cursor=old), 422, "invalid_cursor", "cursor")


# -- metrics -----------------------------------------------------------------------------------


async def test_metrics_after_a_payment(api: Api) -> None:
    await accounts(api, {"alice": "10.00", "bob": ""})
    pid = (await api.post("/v1/payments", PAYMENT | {"in": "100ms"}, "write")).json()["id"]
    async with running(api.app):
        await all_final(api.app, [pid])
    r = await api.client.get("/metrics", headers=api.auth("read"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'paysched_occurrence_outcomes_total{outcome="succeeded"}' in text
    assert "paysched_start_lateness_seconds_count" in text
    executor = (
        'paysched_executor_request_duration_seconds_count{executor="ledger",operation="execute"}'
    )
    assert executor in text
    assert 'paysched_occurrences{state="succeeded"} 1.0' in text
    assert 'paysched_queue_jobs{state="completed"} 1.0' in text
    assert "paysched_oldest_due_occurrence_age_seconds 0.0" in text
    assert "alice" not in text  # no per-account labels


async def test_no_key_reaches_a_log(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    wrong = "psk_0123456789ab_" + "s3cr3t" * 6
    await api.client.get("/v1/accounts", headers={"Authorization": f"Bearer {wrong}"})
    await api.get("/v1/accounts")
    logging.getLogger("paysched.test").warning("echo %s and %s", wrong, api.keys["read"])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "echo" in text
    for key in (wrong, *api.keys.values()):
        assert key.split("_", 2)[2] not in text


async def test_a_payment_without_a_currency_takes_the_payers(api: Api) -> None:
    for name in ("anna", "ben"):
        r = await api.post("/v1/accounts", {"name": name, "currency": "JPY"}, "write")
        assert r.status_code == 201, r.text
    await api.post("/v1/accounts/anna/deposits", {"amount": "1000"}, "write")
    r = await api.post("/v1/payments", {"from": "anna", "to": "ben", "amount": "500", "in": "1h"})
    assert r.status_code == 201, r.text
    assert (r.json()["currency"], r.json()["amount"]) == ("JPY", "500")
    # JPY has no minor unit: the payer's currency also decides how many decimals are allowed.
    body = {"from": "anna", "to": "ben", "amount": "1.50", "in": "1h"}
    problem(await api.post("/v1/payments", body), 422, "invalid_input", "amount")
    body = {"from": "nobody", "to": "ben", "amount": "5", "in": "1h"}
    assert (
        "nobody"
        in problem(await api.post("/v1/payments", body), 422, "invalid_input", "from")["detail"]
    )


async def test_a_create_materializes_its_payment_in_one_transaction(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    store = api.app.store
    real = store.payments.materialize_due
    calls: list[object] = []

    def materialize_due(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(store.payments, "materialize_due", materialize_due)
    # Its occurrence is made in the create's own transaction (materialize_due was a probe and
    # a transaction more), and queued.
    body = {"from": "alice", "to": "bob", "amount": "1.00", "in": "200ms"}
    r = await api.post("/v1/payments", body, "write", key="one-tx")
    assert r.status_code == 201, r.text
    assert calls == []
    detail = (await api.get(f"/v1/payments/{r.json()['id']}")).json()
    assert [o["state"] for o in detail["occurrences"]] == ["queued"]


async def test_every_answer_carries_its_request_id_without_a_base_http_middleware(
    api: Api,
) -> None:
    from starlette.middleware.base import BaseHTTPMiddleware

    # BaseHTTPMiddleware runs every request through an extra task and stream: a fifth of the
    # CPU of a cheap GET. The request id is plain ASGI.
    classes = [m.cls for m in api.api.user_middleware]
    assert not any(isinstance(c, type) and issubclass(c, BaseHTTPMiddleware) for c in classes)
    ok = await api.client.get("/v1/accounts", headers=api.auth() | {"X-Request-Id": "abc-1"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "abc-1"
    body = problem(await api.get("/v1/payments/999999"), 404, "not_found")
    unsupported = await api.client.post(
        "/v1/accounts", content=b"name=x", headers=api.auth() | {"Content-Type": "text/plain"}
    )
    problem(unsupported, 415, "unsupported_media_type", "Content-Type")
    assert body["request_id"].startswith("req_")
