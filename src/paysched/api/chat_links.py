"""/v1/accounts/{name}/links: the chats linked to an account (the Telegram bot's), and the
one-time deep links that link one. See paysched.linking."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param

from paysched.actors import Actor
from paysched.api.deps import paysched, problems
from paysched.api.idempotent import IdempotencyKey, Seal, once
from paysched.api.models import ChatLink, ChatLinkCreate, ChatLinkToken, Id
from paysched.api.security import Read, Write
from paysched.db.apikeys import ApiKey
from paysched.db.links import ChatLinks
from paysched.db.store.base import existing_id
from paysched.domain import normalise_name
from paysched.errors import Conflict
from paysched.linking import (
    bot_username,
    deep_link,
    issue,
    issued_view,
    link_view,
    parse_channel,
    sealed_token,
    unlink,
)

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
# What an Idempotency-Key's record keeps in place of the deep link: the nonce it is made from.
SEALED = "sealed:"


@router.post(
    "/{name}/links",
    status_code=201,
    response_model=ChatLinkToken,
    operation_id="createChatLink",
    responses=problems(404, 409),
)
async def create_link(
    name: str,
    body: ChatLinkCreate,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """A one-time deep link that links the chat it is opened in to this account. It expires
    after PAYSCHED_LINK_TTL (15 minutes by default) and works once. A replay of the same
    Idempotency-Key answers the same link."""
    app = paysched(request)
    parse_channel(body.channel)
    name = normalise_name(name)
    await app.db(app.store.accounts.get_account, name)  # 404 before the Bot API is asked anything
    if not (app.settings.bot_username or app.settings.telegram_token):
        # The request is fine; this deployment has no bot to link a chat to (not a 5xx).
        raise Conflict("no Telegram bot is set up here: TELEGRAM_BOT_TOKEN is not set")
    username = await bot_username(app.settings)  # before the token: a failure makes none
    actor = Actor.of_key(caller, "api")
    token: str | None = None
    seal: Seal | None = None
    if idempotency_key is not None:  # the record keeps a nonce; a replay remakes the token
        _, secret = get_authorization_scheme_param(request.headers.get("Authorization"))
        nonce = secrets.token_urlsafe(16)
        token = sealed_token(secret, nonce)

        def close(view: dict[str, Any]) -> dict[str, Any]:
            return view | {"url": SEALED + nonce}

        def open_(stored: dict[str, Any]) -> dict[str, Any]:
            kept = str(stored["url"]).removeprefix(SEALED)
            return stored | {"url": deep_link(username, sealed_token(secret, kept))}

        seal = Seal(close, open_)

    def run(then: Any) -> Any:
        return app.db(
            issue,
            app.store.engine,
            name,
            actor,
            app.clock.now(),
            app.settings,
            then,
            body.role,
            token,
        )

    return await once(
        request, caller, idempotency_key, 201, run, lambda i: issued_view(i, username), seal
    )


@router.get(
    "/{name}/links",
    response_model=list[ChatLink],
    operation_id="listChatLinks",
    responses=problems(404),
)
async def list_links(name: str, request: Request, _: ApiKey = Read) -> list[dict[str, Any]]:
    """The chats linked to this account."""
    app = paysched(request)
    found = await app.db(ChatLinks(app.store.engine).links_of, normalise_name(name))
    return [link_view(link) for link in found]


@router.delete(
    "/{name}/links/{link_id}",
    response_model=ChatLink,
    operation_id="deleteChatLink",
    responses=problems(404),
)
async def delete_link(
    name: str, link_id: Id, request: Request, caller: ApiKey = Write
) -> dict[str, Any]:
    """Unlink a chat: it sees nothing of the account any more. Answers the removed link."""
    app = paysched(request)
    existing_id(link_id, "link")
    removed = await app.db(
        unlink,
        app.store.engine,
        normalise_name(name),
        Actor.of_key(caller, "api"),
        app.clock.now(),
        link_id=link_id,
    )
    return link_view(removed)
