"""`paysched accounts link / links / unlink` as a person types them, against a local Bot API
server (getMe gives the bot's username for the deep link)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from paysched.db import tables as t
from paysched.db.links import ChatLinks
from paysched.db.store import Store
from tests.http_peers import BotApi
from tests.integration.test_cli import as_json, one_line_error, paysched

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
TOKEN = "123456:CLI-test-token"


@pytest.fixture
def bot_api() -> Iterator[BotApi]:
    api = BotApi(TOKEN, username="paysched_cli_bot").start()
    yield api
    api.stop()


@pytest.fixture
def benv(env: dict[str, str], bot_api: BotApi) -> dict[str, str]:
    return env | {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": bot_api.url}


def test_link_links_and_unlink(benv: dict[str, str], database_url: str) -> None:
    paysched(benv, "accounts", "create", "alice", "--currency", "EUR")
    view = as_json(benv, "accounts", "link", "alice", "--telegram")
    url = urlsplit(view["url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "t.me", "/paysched_cli_bot")
    token = parse_qs(url.query)["start"][0]
    assert view["account"] == "alice" and view["channel"] == "telegram" and view["expires_at"]
    text = paysched(benv, "accounts", "link", "alice", "--telegram").stdout
    assert "https://t.me/paysched_cli_bot?start=" in text and "works once" in text
    assert as_json(benv, "accounts", "links", "alice") == []
    store = Store.connect(database_url)
    try:
        ChatLinks(store.engine).redeem(token, "4201", datetime.now(UTC))
    finally:
        store.close()
    [link] = as_json(benv, "accounts", "links", "alice")
    assert link["chat_id"] == "4201" and link["account"] == "alice" and link["role"] == "holder"
    # --approver: the chat that opens it approves or rejects the account's payments.
    approver = as_json(benv, "accounts", "link", "alice", "--telegram", "--approver")
    assert approver["role"] == "approver"
    store = Store.connect(database_url)
    try:
        token = parse_qs(urlsplit(approver["url"]).query)["start"][0]
        assert ChatLinks(store.engine).redeem(token, "4202", datetime.now(UTC)).role == "approver"
    finally:
        store.close()
    roles = {v["chat_id"]: v["role"] for v in as_json(benv, "accounts", "links", "alice")}
    assert roles == {"4201": "holder", "4202": "approver"}
    as_json(benv, "accounts", "unlink", "alice", "--chat", "4202")
    removed = as_json(benv, "accounts", "unlink", "alice", "--chat", "4201")
    assert removed["id"] == link["id"]
    assert as_json(benv, "accounts", "links", "alice") == []
    # Each change is recorded with who made it; never the token.
    store = Store.connect(database_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(t.actions).order_by(t.actions.c.id)).all()
    finally:
        store.close()
    done = [(r.action, r.actor_kind, r.via) for r in rows if r.action != "create_account"]
    assert done == [("issue_link", "cli", "cli")] * 3 + [("unlink_chat", "cli", "cli")] * 2
    assert all(token not in r.detail for r in rows)
    assert '"chat": "4201"' in rows[-1].detail
    one_line_error(
        paysched(benv, "accounts", "unlink", "alice", "--chat", "4201", check=False), 3, "no link"
    )


def test_bad_input_names_the_field(benv: dict[str, str], env: dict[str, str]) -> None:
    paysched(benv, "accounts", "create", "alice")
    one_line_error(paysched(benv, "accounts", "link", "alice", check=False), 2, "--telegram")
    one_line_error(
        paysched(benv, "accounts", "link", "nobody", "--telegram", check=False), 3, "nobody"
    )
    one_line_error(
        paysched(benv, "accounts", "unlink", "alice", "--chat", "abc", check=False), 2, "--chat"
    )
    one_line_error(paysched(benv, "accounts", "links", "nobody", check=False), 3, "nobody")
    # No bot configured: the deep link cannot be made, and no token is.
    one_line_error(
        paysched(env, "accounts", "link", "alice", "--telegram", check=False),
        2,
        "TELEGRAM_BOT_TOKEN",
    )
    wrong = benv | {"TELEGRAM_BOT_TOKEN": "999:wrong"}
    result = paysched(wrong, "accounts", "link", "alice", "--telegram", check=False)
    one_line_error(result, 2, "TELEGRAM_BOT_TOKEN")
    assert "999:wrong" not in result.stderr
    one_line_error(
        paysched(benv | {"PAYSCHED_LINK_TTL": "10s"}, "accounts", "links", "alice", check=False),
        2,
        "PAYSCHED_LINK_TTL",
    )
    one_line_error(paysched(env | {"PAYSCHED_BOT": "on"}, "bot", check=False), 2, "PAYSCHED_BOT")
    one_line_error(paysched(env, "bot", check=False), 2, "TELEGRAM_BOT_TOKEN")
    one_line_error(
        paysched(benv, "bot", "--webhook", "http://insecure.example/x", check=False),
        2,
        "--webhook",
    )
