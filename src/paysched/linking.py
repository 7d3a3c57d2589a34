"""Linking a chat to an account, as the CLI and the HTTP API do it: a one-time deep link
(https://t.me/BOT?start=TOKEN) and the removal of a link, each recorded with its actor.

The link itself is made by the chat (/start TOKEN, paysched.bot), which is no actor the
`actions` table knows (api_key, cli, python): the person who asked for the link is recorded
when the token is issued ("issue_link"), and the chat that used it is kept on the token's row
(link_tokens.used_by, used_at) and in chat_links.created_at.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from paysched.actors import Actor
from paysched.config import Settings
from paysched.db.actions import Acting, Subject
from paysched.db.links import CHANNEL, ChatLink, ChatLinks, IssuedToken
from paysched.db.store.base import AfterWrite
from paysched.errors import BackendUnavailable, ConfigError, InvalidInput
from paysched.views import iso

log = logging.getLogger("paysched.links")
CHANNELS = (CHANNEL,)
# getMe's answer per (API URL, token): a bot's username does not change under a running paysched.
_usernames: dict[tuple[str, str], str] = {}


def parse_channel(value: str | None, field: str = "channel") -> str:
    if value not in CHANNELS:
        raise InvalidInput(field, f"expected {', '.join(CHANNELS)}, got {value!r}")
    return value


def parse_chat(value: str, field: str = "chat") -> str:
    """A Telegram chat id: an integer (negative for groups)."""
    text = value.strip()
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(text) > 20:
        raise InvalidInput(field, f"expected a Telegram chat id (an integer), got {value!r}")
    return str(int(text))


async def bot_username(settings: Settings) -> str:
    """PAYSCHED_BOT_USERNAME, else the bot's own answer to getMe (asked once per process)."""
    if settings.bot_username:
        return settings.bot_username
    if not settings.telegram_token:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN",
            "a chat link needs the bot: set TELEGRAM_BOT_TOKEN (or PAYSCHED_BOT_USERNAME)",
        )
    key = (settings.telegram_api_url, settings.telegram_token)
    if key not in _usernames:
        from telegram import Bot
        from telegram.error import InvalidToken, TelegramError

        api = settings.telegram_api_url.rstrip("/")
        try:
            async with Bot(settings.telegram_token, base_url=f"{api}/bot") as bot:
                _usernames[key] = str(bot.username)
        except InvalidToken:
            raise ConfigError("TELEGRAM_BOT_TOKEN", "the Bot API refused this token") from None
        except TelegramError as exc:
            raise BackendUnavailable(f"the Telegram Bot API did not answer getMe: {exc}") from None
    return _usernames[key]


def bot_username_now(settings: Settings) -> str:
    """bot_username for a command that runs no event loop of its own."""
    return asyncio.run(bot_username(settings))


def deep_link(username: str, token: str) -> str:
    return f"https://t.me/{username}?start={token}"


def sealed_token(secret: str, nonce: str) -> str:
    """A link token that only the holder of `secret` (the caller's API key, which paysched
    keeps hashed) can make again from `nonce`. An Idempotency-Key's record keeps the nonce,
    not the token: a replay makes the token again from the key the retry is sent with, and a
    reader of the database alone cannot (the link tokens themselves are kept hashed too)."""
    mac = hmac.new(secret.encode(), b"paysched link token\0" + nonce.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def issue(
    engine: Engine,
    account: str,
    actor: Actor,
    now: datetime,
    settings: Settings,
    then: AfterWrite | None = None,
    role: str = "holder",
    token: str | None = None,
) -> IssuedToken:
    """A one-time token for `account` linking a chat as `role`, its issue recorded with
    `actor` (never the token); `token`: see ChatLinks.issue."""
    acting = Acting(
        actor,
        "issue_link",
        now,
        lambda i: Subject(
            detail={
                "account": i.account.name,
                "channel": CHANNEL,
                "role": i.role,
                "expires_at": str(iso(i.expires_at)),
            }
        ),
    )
    links = ChatLinks(engine)
    issued = links.issue(account, now, settings.link_ttl, acting.then(then), role, token)
    acting.logged()
    return issued


def unlink(
    engine: Engine,
    account: str,
    actor: Actor,
    now: datetime,
    *,
    link_id: int | None = None,
    chat_id: str | None = None,
    then: AfterWrite | None = None,
) -> ChatLink:
    acting = Acting(
        actor,
        "unlink_chat",
        now,
        lambda link: Subject(
            detail={
                "account": link.account,
                "channel": link.channel,
                "chat": link.chat_id,
                "link": link.id,
            }
        ),
    )
    removed = ChatLinks(engine).unlink(account, link_id, chat_id, acting.then(then))
    acting.logged()
    return removed


def issued_view(issued: IssuedToken, username: str) -> dict[str, Any]:
    return {
        "account": issued.account.name,
        "channel": CHANNEL,
        "role": issued.role,
        "url": deep_link(username, issued.token),
        "expires_at": iso(issued.expires_at),
    }


def link_view(link: ChatLink) -> dict[str, Any]:
    return {
        "id": link.id,
        "account": link.account,
        "channel": link.channel,
        "chat_id": link.chat_id,
        "role": link.role,
        "created_at": iso(link.created_at),
    }
