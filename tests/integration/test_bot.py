"""The Telegram bot against a local Bot API server (tests/http_peers.BotApi) over real HTTP:
linking by one-time deep link, each command's answer to a linked and an unlinked chat, the
webhook's secret token, and updates handled once across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from paysched.actors import Actor
from paysched.app import App
from paysched.bot import messages
from paysched.bot.messages import PaymentLine
from paysched.bot.service import SECRET_HEADER, run_bot
from paysched.clock import ManualClock
from paysched.config import Settings
from paysched.db.links import ChatLinks
from paysched.domain import Account
from paysched.linking import issue, unlink
from paysched.redis_server import free_port
from tests.http_peers import BotApi
from tests.integration.helpers import all_final, fund, running

TOKEN = "123456:BOT-test-token"
ALICE, MALLORY = 4201, 4666  # chat ids


@pytest.fixture
def bot_api() -> Iterator[BotApi]:
    api = BotApi(TOKEN).start()
    yield api
    api.stop()


@pytest.fixture
def bot_settings(env: dict[str, str], bot_api: BotApi) -> Settings:
    return Settings.from_env(env | {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": bot_api.url})


@pytest.fixture
async def bapp(bot_settings: Settings) -> AsyncIterator[App]:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    app = await App.open(bot_settings, clock=clock, with_queue=False)
    yield app
    await app.close()


@contextlib.asynccontextmanager
async def bot_running(
    app: App, webhook: str | None = None, sock: object = None
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_bot(
            app.store.engine,
            app.clock,
            app.pool,
            TOKEN,
            app.settings.telegram_api_url,
            stop,
            webhook=webhook,
            sock=sock,
            poll_timeout=1,
            app=app,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def answer(api: BotApi, chat: int, text: str) -> str:
    """What the bot answers `chat` writing `text`."""
    before = len(api.texts(chat))
    api.message(chat, text)
    await asyncio.to_thread(api.wait, lambda: len(api.texts(chat)) > before)
    return api.texts(chat)[before]


async def token_for(app: App, account: str) -> str:
    issued = await app.db(
        issue, app.store.engine, account, Actor.python(), app.clock.now(), app.settings
    )
    return issued.token


async def test_linking_by_one_time_link(bapp: App, bot_api: BotApi) -> None:
    await fund(bapp, {"alice": 12_345}, "EUR")
    token = await token_for(bapp, "alice")
    async with bot_running(bapp):
        assert await answer(bot_api, ALICE, "/upcoming") == messages.NOT_LINKED
        assert await answer(bot_api, ALICE, "/balance") == messages.NOT_LINKED
        assert await answer(bot_api, ALICE, "/start") == messages.NOT_LINKED
        assert await answer(bot_api, ALICE, "/start not-a-token") == messages.refused("unknown")
        assert await answer(bot_api, ALICE, f"/start {token}") == messages.linked("alice")
        # Used once: another chat gets nothing with it; the same chat again is still linked.
        assert await answer(bot_api, MALLORY, f"/start {token}") == messages.refused("used")
        assert await answer(bot_api, MALLORY, "/balance") == messages.NOT_LINKED
        alice = Account(0, "alice", "EUR", 12_345)
        assert await answer(bot_api, ALICE, "/balance") == messages.balances([alice])
        # An expired token links nothing.
        late = await token_for(bapp, "alice")
        assert isinstance(bapp.clock, ManualClock)
        bapp.clock.advance(bapp.settings.link_ttl + timedelta(seconds=1))
        assert await answer(bot_api, MALLORY, f"/start {late}") == messages.refused("expired")
        assert await answer(bot_api, MALLORY, "/upcoming") == messages.NOT_LINKED
        # A button pressed in a chat that is not linked: a polite no, nothing changed.
        bot_api.press(MALLORY, "approve:1")
        await asyncio.to_thread(bot_api.wait, lambda: len(bot_api.answered) == 1)
        assert bot_api.answered[0]["text"] == messages.NOT_LINKED_SHORT
        assert await answer(bot_api, ALICE, "/pay bob 10") == messages.UNKNOWN_COMMAND
        assert await answer(bot_api, ALICE, "/help") == messages.HELP
    links = await bapp.db(ChatLinks(bapp.store.engine).links_of, "alice")
    assert [link.chat_id for link in links] == [str(ALICE)]


async def test_unlinked_chat_sees_nothing_any_more(bapp: App, bot_api: BotApi) -> None:
    await fund(bapp, {"alice": 500}, "EUR")
    token = await token_for(bapp, "alice")
    async with bot_running(bapp):
        assert await answer(bot_api, ALICE, f"/start {token}") == messages.linked("alice")
        await bapp.db(
            unlink,
            bapp.store.engine,
            "alice",
            Actor.python(),
            bapp.clock.now(),
            chat_id=str(ALICE),
        )
        assert await answer(bot_api, ALICE, "/balance") == messages.NOT_LINKED
        assert await answer(bot_api, ALICE, "/history") == messages.NOT_LINKED


async def test_upcoming_and_history_in_the_payments_zone(
    bot_settings: Settings, bot_api: BotApi
) -> None:
    app = await App.open(bot_settings)
    try:
        await fund(app, {"alice": 100_000, "landlord": 0, "stranger": 50_000}, "EUR")
        now = app.clock.now()

        async def create(payer: str, payee: str, amount: int, **when: object) -> int:
            fields = dict(due_at=None, cron=None, timezone=None) | when
            payment = await app.create_payment(
                actor=Actor.python(),
                payer=payer,
                payee=payee,
                amount=amount,
                currency="EUR",
                memo="",
                **fields,
            )
            return payment.id

        paid = await create("alice", "landlord", 2_500, due_at=now)
        async with running(app):
            await all_final(app, [paid])
        later = now.replace(microsecond=0) + timedelta(days=3)
        one_off = await create("landlord", "alice", 999, due_at=later)
        monthly = await create(
            "alice", "landlord", 95_000, cron="0 9 1 * *", timezone="Europe/Berlin"
        )
        await create("stranger", "landlord", 1_000, due_at=later)  # not alice's: never shown
        rent = await app.db(app.store.payments.get_payment, monthly)
        assert rent.next_due_at is not None
        token = await token_for(app, "alice")
        async with bot_running(app):
            assert await answer(bot_api, ALICE, f"/start {token}") == messages.linked("alice")
            expected = sorted(
                [
                    PaymentLine(one_off, later, 999, "EUR", "landlord", "alice", None),
                    PaymentLine(
                        monthly,
                        rent.next_due_at,
                        95_000,
                        "EUR",
                        "alice",
                        "landlord",
                        "Europe/Berlin",
                    ),
                ],
                key=lambda line: line.at,
            )
            assert await answer(bot_api, ALICE, "/upcoming") == messages.upcoming(expected)
            assert "Europe/Berlin" in messages.upcoming(expected)
            history = await answer(bot_api, ALICE, "/history")
            due = (await app.db(app.store.reads.occurrences_of, paid))[0].due_at
            assert history == messages.history(
                [PaymentLine(paid, due, 2_500, "EUR", "alice", "landlord", None, "succeeded")]
            )
            balance = await answer(bot_api, ALICE, "/balance")
            assert balance == messages.balances([Account(0, "alice", "EUR", 97_500)])
    finally:
        await app.close()


async def test_restart_does_not_handle_an_update_again(bapp: App, bot_api: BotApi) -> None:
    async with bot_running(bapp):
        assert await answer(bot_api, ALICE, "/help") == messages.HELP
    handled = await bapp.db(ChatLinks(bapp.store.engine).update_offset)
    assert handled > 0
    # Telegram never heard that it was handled (the process died before its next poll): it
    # hands the update out again. The new process asks from its stored offset and skips it.
    command = {"type": "bot_command", "offset": 0, "length": 5}
    chat = {"id": ALICE, "type": "private"}
    message = {"message_id": 99, "date": 0, "chat": chat, "text": "/help", "entities": [command]}
    bot_api.inject({"update_id": handled - 1, "message": message})
    bot_api.updates.sort(key=lambda u: u["update_id"])
    async with bot_running(bapp):
        assert await answer(bot_api, ALICE, "/balance") == messages.NOT_LINKED
        assert bot_api.polls[-1]["offset"] not in (None, "", 0)
    assert bot_api.texts(ALICE) == [messages.HELP, messages.NOT_LINKED]


async def test_webhook_checks_the_secret_token(bapp: App, bot_api: BotApi) -> None:
    from paysched.api.server import listen

    port = free_port()
    sock = listen("127.0.0.1", port)
    url = "https://bot.example.test/telegram/hook"
    async with bot_running(bapp, webhook=url, sock=sock), httpx.AsyncClient() as client:
        await asyncio.to_thread(bot_api.wait, lambda: bot_api.webhook is not None)
        assert bot_api.webhook is not None and bot_api.webhook["url"] == url
        secret = str(bot_api.webhook["secret_token"])
        local = f"http://127.0.0.1:{port}/telegram/hook"
        update = bot_api.update(bot_api.message(ALICE, "/help"))
        header = SECRET_HEADER.decode()
        for headers in ({}, {header: "wrong"}, {header: secret[:-1]}):
            refused = await client.post(local, json=update, headers=headers)
            assert refused.status_code == 403
        wrong_path = await client.post(local + "x", json=update, headers={header: secret})
        assert wrong_path.status_code == 404
        bad = await client.post(local, json={"no": "update"}, headers={header: secret})
        assert bad.status_code == 400
        assert bot_api.sent == []  # nothing refused was handled
        ok = await client.post(local, json=update, headers={header: secret})
        assert ok.status_code == 200
        assert bot_api.texts(ALICE) == [messages.HELP]
        # Telegram delivers again when it missed the answer: handled once.
        again = await client.post(local, json=update, headers={header: secret})
        assert again.status_code == 200
        assert bot_api.texts(ALICE) == [messages.HELP]


def test_readme_shows_the_rendered_messages() -> None:
    """README's "From the chat" is the templates' own output (python -m paysched.bot.messages
    writes it)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index(messages.README_BEGIN)
    end = readme.index(messages.README_END) + len(messages.README_END)
    assert readme[start:end] == messages.readme_section(), (
        "README's bot messages are out of date: paste `python -m paysched.bot.messages`"
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_run_answers_chats_when_the_bot_is_on(env: dict[str, str], bot_api: BotApi) -> None:
    """PAYSCHED_BOT=on: `paysched run` (two worker processes) runs the bot in its first."""
    run_env = env | {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": bot_api.url,
        "PAYSCHED_BOT": "on",
        "PAYSCHED_PROCESSES": "2",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "paysched", "run"],
        env=os.environ | run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        bot_api.message(ALICE, "/help")
        bot_api.wait(lambda: bool(bot_api.texts(ALICE)), timeout=60)
        assert bot_api.texts(ALICE) == [messages.HELP]
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "the bot stopped" not in err
    assert "Traceback" not in err, err
    assert bot_api.texts(ALICE) == [messages.HELP]  # one process polled: answered once


async def test_the_stand_in_speaks_inline_keyboards(bapp: App, bot_api: BotApi) -> None:
    """What the bot's next commands (reminders, approvals) will send: a message with an inline
    keyboard, its edit, and the answer to a button, as the Bot API takes and answers them."""
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    from paysched.bot.service import ChatBot

    bot = ChatBot(bapp.store.engine, bapp.clock, bapp.pool, TOKEN, bot_api.url)
    await bot.open()
    try:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Approve", callback_data="a:1")]])
        sent = await bot.application.bot.send_message(
            ALICE, "Pay 12.34 EUR?", reply_markup=keyboard
        )
        assert sent.reply_markup == keyboard and sent.chat.id == ALICE
        assert bot_api.sent[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "a:1"
        edited = await bot.application.bot.edit_message_text(
            "Approved", chat_id=ALICE, message_id=sent.message_id
        )
        assert not isinstance(edited, bool) and edited.text == "Approved"
        assert bot_api.edited[0]["message_id"] in (sent.message_id, str(sent.message_id))
        assert await bot.application.bot.answer_callback_query("cq1", text="ok")
        assert bot_api.answered == [{"callback_query_id": "cq1", "text": "ok"}]
    finally:
        await bot.close()


async def test_polling_outlasts_a_conflict_and_a_bot_api_outage(bapp: App, bot_api: BotApi) -> None:
    """Another process polling with the token (409) and a Bot API answering 502 are waited
    out; the updates are answered afterwards, once."""
    conflict = {
        "ok": False,
        "error_code": 409,
        "description": "Conflict: terminated by other "
        "getUpdates request; make sure that only one bot instance is running",
    }
    outage = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    bot_api.failures["getUpdates"] = [(409, conflict), (502, outage)]
    bot_api.message(ALICE, "/help")
    async with bot_running(bapp):
        await asyncio.to_thread(bot_api.wait, lambda: bool(bot_api.texts(ALICE)), 30)
        assert await answer(bot_api, ALICE, "/balance") == messages.NOT_LINKED
    assert bot_api.texts(ALICE) == [messages.HELP, messages.NOT_LINKED]
    assert bot_api.failures["getUpdates"] == []
