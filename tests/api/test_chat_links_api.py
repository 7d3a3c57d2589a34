"""/v1/accounts/{name}/links over the API: a one-time deep link per POST (replayed under its
Idempotency-Key), the account's links, and unlinking; bad input is a problem naming the
field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from paysched.config import Settings
from paysched.db import tables as t
from paysched.db.links import ChatLinks, LinkRefused
from tests.api.conftest import Api, problem
from tests.http_peers import BotApi

TOKEN = "123456:API-test-token"


@pytest.fixture
def bot_api() -> Iterator[BotApi]:
    api = BotApi(TOKEN, username="paysched_api_bot").start()
    yield api
    api.stop()


@pytest.fixture
def settings(env: dict[str, str], bot_api: BotApi) -> Settings:
    return Settings.from_env(env | {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": bot_api.url})


def start_token(url: str) -> str:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "t.me", "/paysched_api_bot")
    return parse_qs(parts.query)["start"][0]


async def test_link_list_and_unlink(api: Api, bot_api: BotApi) -> None:
    assert (await api.post("/v1/accounts", {"name": "alice", "currency": "EUR"})).status_code == 201
    made = await api.post("/v1/accounts/alice/links", {"channel": "telegram"}, scope="write")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["account"] == "alice" and body["channel"] == "telegram" and body["expires_at"]
    token = start_token(body["url"])
    # The same Idempotency-Key answers the same link; another request, a new one.
    first = await api.post("/v1/accounts/alice/links", {}, scope="write", key="k-1")
    again = await api.post("/v1/accounts/alice/links", {}, scope="write", key="k-1")
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert start_token(first.json()["url"]) != token
    assert bot_api.calls.count("getMe") == 1  # the username is asked once per process
    assert (await api.get("/v1/accounts/alice/links")).json() == []
    app = api.app
    await app.db(ChatLinks(app.store.engine).redeem, token, "4201", app.clock.now())
    [link] = (await api.get("/v1/accounts/alice/links")).json()
    assert link["chat_id"] == "4201" and link["account"] == "alice" and link["role"] == "holder"
    # An approver's link: the chat opening it approves or rejects alice's payments.
    made = await api.post("/v1/accounts/alice/links", {"role": "approver"}, scope="write")
    assert made.status_code == 201 and made.json()["role"] == "approver", made.text
    linked = await app.db(
        ChatLinks(app.store.engine).redeem, start_token(made.json()["url"]), "4202", app.clock.now()
    )
    assert linked.role == "approver"
    owner = await api.post("/v1/accounts/alice/links", {"role": "owner"}, scope="write")
    problem(owner, 422, "invalid_input", "role")
    await api.client.delete(
        f"/v1/accounts/alice/links/{linked_id(await api.get('/v1/accounts/alice/links'), '4202')}",
        headers=api.auth("write"),
    )
    path = f"/v1/accounts/alice/links/{link['id']}"
    refused = await api.client.delete(path, headers=api.auth("read"))
    problem(refused, 403, "insufficient_scope")
    removed = await api.client.delete(path, headers=api.auth("write"))
    assert removed.status_code == 200 and removed.json() == link
    problem(await api.client.delete(path, headers=api.auth("write")), 404, "not_found")
    assert (await api.get("/v1/accounts/alice/links")).json() == []


async def test_an_idempotency_record_never_holds_the_links_token(api: Api) -> None:
    """The deep link is a secret: paysched keeps link tokens hashed, and an Idempotency-Key's
    record keeps only the nonce the token is made from with the caller's API key. A replay
    answers the same link, which links a chat once; the database alone cannot make it."""
    assert (await api.post("/v1/accounts", {"name": "alice"})).status_code == 201
    first = await api.post("/v1/accounts/alice/links", {}, scope="write", key="k-secret")
    assert first.status_code == 201, first.text
    token = start_token(first.json()["url"])
    app = api.app
    with app.store.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(select(t.idempotency_keys)) for v in row)
    assert "sealed:" in stored and token not in stored
    again = await api.post("/v1/accounts/alice/links", {}, scope="write", key="k-secret")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    linked = await app.db(ChatLinks(app.store.engine).redeem, token, "4301", app.clock.now())
    assert linked.account.name == "alice"
    with pytest.raises(LinkRefused):  # once
        await app.db(ChatLinks(app.store.engine).redeem, token, "4302", app.clock.now())


async def test_bad_input_is_a_problem_naming_the_field(api: Api) -> None:
    await api.post("/v1/accounts", {"name": "alice", "currency": "EUR"})
    problem(
        await api.post("/v1/accounts/alice/links", {"channel": "sms"}),
        422,
        "invalid_input",
        "channel",
    )
    problem(
        await api.post("/v1/accounts/alice/links", {"chanel": "telegram"}),
        422,
        "invalid_input",
        "chanel",
    )
    problem(await api.post("/v1/accounts/nobody/links", {}), 404, "not_found")
    problem(await api.get("/v1/accounts/nobody/links"), 404, "not_found")
    write = api.auth("write")
    for link_id in ("abc", "1.0", "-1"):
        response = await api.client.delete(f"/v1/accounts/alice/links/{link_id}", headers=write)
        assert response.status_code == 422, (link_id, response.text)
    huge = await api.client.delete("/v1/accounts/alice/links/99999999999999", headers=write)
    problem(huge, 404, "not_found")


async def test_without_a_bot_there_is_nothing_to_link_to(api: Api, settings: Settings) -> None:
    await api.post("/v1/accounts", {"name": "alice"})
    api.app.settings = settings.with_overrides(telegram_token="", bot_username="")
    refused = await api.post("/v1/accounts/alice/links", {})
    assert "TELEGRAM_BOT_TOKEN" in problem(refused, 409, "conflict")["detail"]


def linked_id(response: Any, chat: str) -> int:
    return int(next(v["id"] for v in response.json() if v["chat_id"] == chat))
