"""The Telegram bot: python-telegram-bot's handlers over paysched's database, fed by long
polling (getUpdates) or by Telegram's webhook.

Every update is handled once across restarts: the first update_id not yet handled is kept in
the database (ChatLinks.handled) after each one, polling asks from there, and an update at or
below it (a webhook's retry) is answered and dropped. A crash between handling an update and
recording it handles that one update again: its commands only read, and /start with a token
its own chat already used answers "linked" again (ChatLinks.redeem).

Only a chat linked to an account sees anything of it: every command but /start and /help asks
the database which accounts the chat speaks for, and a chat that speaks for none gets a polite
refusal and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Engine
from telegram import CallbackQuery, Message, Update
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from paysched.bot import buttons, messages, reads
from paysched.clock import Clock
from paysched.db.links import ChatLinks, LinkRefused
from paysched.db.store.base import short_error
from paysched.domain import Account
from paysched.errors import ConfigError
from paysched.threads import in_pool

if TYPE_CHECKING:
    from paysched.app import App

log = logging.getLogger("paysched.bot")
P = ParamSpec("P")
R = TypeVar("R")

SECRET_HEADER = b"x-telegram-bot-api-secret-token"
ALLOWED_UPDATES = ("message", "callback_query")
POLL_TIMEOUT_S = 30  # getUpdates' long poll: Telegram answers at once when an update comes
RETRY_CAP_S = 30.0
BODY_MAX = 1 << 20  # an update is a few kB; a webhook body past this is not one
LINES = 10  # payments /upcoming and /history show
Context = ContextTypes.DEFAULT_TYPE


class _QuietPolls(logging.Filter):
    """httpx logs each request at INFO: an idle bot's long poll would be a line every
    POLL_TIMEOUT_S saying nothing. Its answers (sendMessage ...) are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/getUpdates" not in record.getMessage()


_quiet_polls = _QuietPolls()


class ChatBot:
    """The bot's handlers and its two ways of being fed updates (`poll`, `handle` for the
    webhook), over one Application of python-telegram-bot that never polls by itself."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        pool: ThreadPoolExecutor,
        token: str,
        api_url: str,
        *,
        poll_timeout: int = POLL_TIMEOUT_S,
        app: App | None = None,
    ) -> None:
        self.links = ChatLinks(engine)
        # What buttons act through (paysched.bot.buttons); without it they change nothing.
        self.app = app
        self.engine = engine
        self.clock = clock
        self.pool = pool
        self.poll_timeout = poll_timeout
        api = api_url.rstrip("/")
        self.application: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{api}/bot")
            .base_file_url(f"{api}/file/bot")
            .updater(None)  # paysched polls itself: the offset lives in its database
            .build()
        )
        self.offset = 0
        self._one_at_a_time = asyncio.Lock()
        handlers = self.application
        handlers.add_handler(CommandHandler("start", self._start))
        handlers.add_handler(CommandHandler("help", self._help))
        handlers.add_handler(CommandHandler("upcoming", self._linked(self._upcoming)))
        handlers.add_handler(CommandHandler("history", self._linked(self._history)))
        handlers.add_handler(CommandHandler("balance", self._linked(self._balance)))
        handlers.add_handler(CallbackQueryHandler(self._button))
        # Anything else: in a group only a command is for the bot, not the members' talk.
        anything = filters.COMMAND | filters.ChatType.PRIVATE
        handlers.add_handler(MessageHandler(anything, self._linked(self._unknown)))
        handlers.add_error_handler(self._failed)

    @property
    def username(self) -> str:
        return str(self.application.bot.username)

    async def db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await in_pool(self.pool, fn, *args, **kwargs)

    async def open(self, stop: asyncio.Event | None = None) -> bool:
        """getMe (a wrong token is a ConfigError here), and where the last run stopped. With
        `stop`, a Bot API that does not answer is asked again until it does (True) or `stop`
        is set (False)."""
        logging.getLogger("httpx").addFilter(_quiet_polls)  # never added twice
        delay = 1.0
        while True:
            try:
                await self.application.initialize()
                break
            except InvalidToken:
                raise ConfigError("TELEGRAM_BOT_TOKEN", "the Bot API refused this token") from None
            except NetworkError as exc:
                if stop is None:
                    raise
                log.warning(
                    "bot: the Bot API does not answer (%s); trying again in %g s", exc, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False
                delay = min(delay * 2, RETRY_CAP_S)
        self.offset = await self.db(self.links.update_offset)
        return True

    async def close(self) -> None:
        await self.application.shutdown()

    # -- updates -------------------------------------------------------------------------------

    def parse(self, data: dict[str, Any]) -> Update:
        """An update as the Bot API sends it (a webhook's body)."""
        return Update.de_json(data, self.application.bot)

    async def handle(self, update: Update) -> None:
        """One update, handled unless it was already."""
        async with self._one_at_a_time:
            if update.update_id < self.offset:
                log.debug("update %s was handled before: dropped", update.update_id)
                return
            await self.application.process_update(update)
            await self.db(self.links.handled, update.update_id)
            self.offset = update.update_id + 1

    async def poll(self, stop: asyncio.Event) -> None:
        """Long polling until `stop` is set. A webhook left set would make getUpdates fail:
        it is removed first (the updates it holds stay queued for us)."""
        await self.application.bot.delete_webhook()
        log.info("bot @%s answering chats (long polling)", self.username)
        delay = 1.0
        while not stop.is_set():
            try:
                updates = await _unless_stopped(stop, self._get_updates())
                for update in updates or ():
                    await self.handle(update)
            except InvalidToken:
                raise ConfigError("TELEGRAM_BOT_TOKEN", "the Bot API refused this token") from None
            except Exception as exc:
                # Conflict: another process polls with this token (one bot per token); or the
                # Bot API or the database is away. An update not recorded as handled is asked
                # for again (the offset did not move), so nothing is lost by waiting.
                why = str(exc) if isinstance(exc, TelegramError) else short_error(exc)
                log.warning("bot: %s; trying again in %g s", why, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, RETRY_CAP_S)
                continue
            delay = 1.0

    async def _get_updates(self) -> tuple[Update, ...]:
        updates: tuple[Update, ...] = await self.application.bot.get_updates(
            offset=self.offset or None,
            timeout=self.poll_timeout,
            allowed_updates=list(ALLOWED_UPDATES),
            read_timeout=self.poll_timeout + 10,
        )
        return updates

    async def set_webhook(self, url: str, secret: str) -> None:
        await self.application.bot.set_webhook(
            url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES)
        )
        log.info("bot @%s answering chats (webhook %s)", self.username, url)

    # -- handlers ------------------------------------------------------------------------------

    async def _reply(self, update: Update, text: str) -> None:
        if update.effective_chat is not None:
            await self.application.bot.send_message(update.effective_chat.id, text)

    async def _accounts(self, update: Update) -> list[Account]:
        chat = update.effective_chat
        return [] if chat is None else await self.db(self.links.accounts_of_chat, str(chat.id))

    def _linked(
        self, handler: Callable[[Update, list[Account]], Awaitable[None]]
    ) -> Callable[[Update, Context], Coroutine[Any, Any, None]]:
        """`handler` for a chat linked to one account or more; the refusal for any other."""

        async def checked(update: Update, context: Context) -> None:
            accounts = await self._accounts(update)
            if not accounts:
                await self._reply(update, messages.NOT_LINKED)
                return
            await handler(update, accounts)

        return checked

    async def _start(self, update: Update, context: Context) -> None:
        chat = update.effective_chat
        if chat is None:
            return
        if not context.args:  # /start alone: the chat was opened, not a link
            linked = await self._accounts(update)
            await self._reply(update, messages.HELP if linked else messages.NOT_LINKED)
            return
        try:
            link = await self.db(self.links.redeem, context.args[0], str(chat.id), self.clock.now())
        except LinkRefused as refused:
            log.info("bot: a link token was refused (%s)", refused.reason)
            await self._reply(update, messages.refused(refused.reason))
            return
        log.info("bot: a chat is linked to account %s as %s", link.account.name, link.role)
        await self._reply(update, messages.linked(link.account.name, link.role))

    async def _help(self, update: Update, context: Context) -> None:
        await self._reply(update, messages.HELP)

    async def _upcoming(self, update: Update, accounts: list[Account]) -> None:
        lines = await self.db(reads.upcoming, self.engine, [a.id for a in accounts], LINES)
        await self._reply(update, messages.upcoming(lines))

    async def _history(self, update: Update, accounts: list[Account]) -> None:
        lines = await self.db(reads.history, self.engine, [a.id for a in accounts], LINES)
        await self._reply(update, messages.history(lines))

    async def _balance(self, update: Update, accounts: list[Account]) -> None:
        await self._reply(update, messages.balances(accounts))

    async def _unknown(self, update: Update, accounts: list[Account]) -> None:
        await self._reply(update, messages.UNKNOWN_COMMAND)

    async def _button(self, update: Update, context: Context) -> None:
        """A button of the bot's own (paysched.bot.buttons) pressed: its verb acts, the press
        is answered with what happened and the message it was under says so too (its buttons
        go). One pressed in a chat that is not linked, or that may not act, is refused in so
        many words, so that nobody takes silence for a yes."""
        query = update.callback_query
        chat = update.effective_chat
        if query is None or chat is None:
            return
        links = await self.db(self.links.links_of_chat, str(chat.id))
        if not links:
            await _toast(query, messages.NOT_LINKED_SHORT)
            return
        try:
            if self.app is None:
                raise buttons.Refused(messages.UNKNOWN_BUTTON)
            handler, args = buttons.parse(query.data or "")
            outcome = await handler(buttons.Press(self.app, str(chat.id), links, args))
        except buttons.Refused as refused:
            await _toast(query, str(refused))
            return
        await _toast(query, outcome)
        message = query.message
        if isinstance(message, Message) and message.text:
            # The message may be gone or already say this (a double tap): the answer above
            # told the person all the same.
            with contextlib.suppress(TelegramError):
                await self.application.bot.edit_message_text(
                    messages.pressed(message.text, outcome),
                    chat_id=chat.id,
                    message_id=message.message_id,
                )

    async def _failed(self, update: object, context: Context) -> None:
        log.error("bot: handling an update failed: %s", context.error, exc_info=context.error)
        if isinstance(update, Update):
            with contextlib.suppress(TelegramError):
                await self._reply(update, messages.FAILED)


async def _toast(query: CallbackQuery, text: str) -> None:
    """Answer a press. Telegram refuses the answer to one pressed long ago (a press handled
    after a restart): what it did is in the message's edit all the same, so that is no
    failure to report in the chat."""
    try:
        await query.answer(text)
    except BadRequest as exc:
        log.info("bot: the answer to a button was refused (%s)", exc)


async def _unless_stopped(stop: asyncio.Event, call: Awaitable[R]) -> R | None:
    """`call`'s result, or None as soon as `stop` is set (the call is cancelled)."""
    task = asyncio.ensure_future(call)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


# -- webhook -----------------------------------------------------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def new_secret() -> str:
    """setWebhook's secret_token: 1-256 of A-Z a-z 0-9 _ -. A new one at each start, so
    nothing to configure or leak; only this process's registration knows it."""
    return secrets.token_urlsafe(32)


def webhook_app(bot: ChatBot, path: str, secret: str) -> Callable[[Scope, Receive, Send], Any]:
    """The ASGI app Telegram posts updates to: POST `path` with the secret-token header that
    setWebhook registered, or nothing is handled (403)."""
    expected = secret.encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or scope["path"] != path:
            await _answer(send, 404, {"error": "not found"})
            return
        given = dict(scope["headers"]).get(SECRET_HEADER, b"")
        if not hmac.compare_digest(given, expected):
            log.warning("bot: a webhook request without the right secret token was refused")
            await _answer(send, 403, {"error": "wrong or missing secret token"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > BODY_MAX:
                await _answer(send, 413, {"error": "too large for an update"})
                return
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            await _answer(send, 400, {"error": "expected an update: an object with update_id"})
            return
        try:
            update = bot.parse(data)
        except (TelegramError, ValueError, TypeError, KeyError):
            await _answer(send, 400, {"error": "not an update the Bot API would send"})
            return
        await bot.handle(update)
        await _answer(send, 200, {})

    return app


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def webhook_path(url: str) -> str:
    """The path Telegram will post to, from the public URL given (`--webhook`)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError("--webhook", f"expected the public https:// URL, got {url!r}")
    return parts.path or "/"


async def serve_webhook(bot: ChatBot, sock: Any, url: str, stop: asyncio.Event) -> None:
    """Answer Telegram's posts on `sock` until `stop` is set."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # paysched handles its own signals
            yield

    secret = new_secret()
    app = webhook_app(bot, webhook_path(url), secret)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, server_header=False, lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await bot.set_webhook(url, secret)
        await stop.wait()
    finally:
        server.should_exit = True
        await task


async def run_bot(
    engine: Engine,
    clock: Clock,
    pool: ThreadPoolExecutor,
    token: str,
    api_url: str,
    stop: asyncio.Event,
    *,
    webhook: str | None = None,
    sock: Any = None,
    poll_timeout: int = POLL_TIMEOUT_S,
    app: App | None = None,
) -> None:
    """The bot until `stop` is set: long polling, or the webhook at `webhook` served on
    `sock`. Its buttons act through `app` (the same operations as the API)."""
    bot = ChatBot(engine, clock, pool, token, api_url, poll_timeout=poll_timeout, app=app)
    if not await bot.open(stop):
        return
    try:
        if webhook is not None:
            await serve_webhook(bot, sock, webhook, stop)
        else:
            await bot.poll(stop)
    finally:
        await bot.close()
