"""Repository of chats linked to accounts (tables chat_links and link_tokens) and of the bot's
update offset (table meta).

A link is made by a one-time token: `issue` gives it once (only its SHA-256 is stored) with an
expiry; `redeem` spends it in one UPDATE that matches only an unused, unexpired token, so two
chats racing for one token cannot both win, and links that chat. Only a linked chat may see or
act on an account's payments (paysched.bot asks `accounts_of_chat` for every message).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, insert, select, update

from paysched.db import tables as t
from paysched.db.engine import reading
from paysched.db.store.base import AfterWrite, after
from paysched.db.store.rows import account_from
from paysched.domain import Account, normalise_name
from paysched.errors import ConstraintViolation, InvalidInput, NotFound

CHANNEL = "telegram"
TOKEN_MAX = 64  # Telegram's /start payload is at most 64 characters
CHAT_MAX = 64  # chat_links.chat_id
OFFSET_KEY = "telegram_update_offset"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """The token itself exists only here, once: the database keeps its hash."""

    token: str
    account: Account
    expires_at: datetime
    role: str = "holder"  # what the link grants: holder, or approver (tables.CHAT_ROLES)


@dataclass(frozen=True, slots=True)
class ChatLink:
    id: int
    account: str
    channel: str
    chat_id: str
    created_at: datetime
    role: str = "holder"


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    """An account a chat speaks for, and as what: holder or approver (tables.CHAT_ROLES)."""

    account: Account
    role: str


class LinkRefused(Exception):
    """A /start token that links nothing; `reason` is unknown, expired or used."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ChatLinks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- tokens --------------------------------------------------------------------------------

    def issue(
        self,
        account: str,
        now: datetime,
        ttl: timedelta,
        then: AfterWrite | None = None,
        role: str = "holder",
        token: str | None = None,
    ) -> IssuedToken:
        """A new one-time token for `account`, valid for `ttl`, linking a chat as `role`
        (holder, or approver: it also approves or rejects the account's payments). `then`
        runs in the same transaction with the IssuedToken (the actor's record, an
        idempotency key). `token`: one the caller made (linking.sealed_token), else a random
        one."""
        if role not in t.CHAT_ROLES:
            raise InvalidInput("role", f"expected {' or '.join(t.CHAT_ROLES)}, got {role!r}")
        # 32 bytes: 43 URL-safe characters, within /start's 64 and unguessable.
        token = token or secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            found = _account(conn, account)
            conn.execute(
                insert(t.link_tokens).values(
                    token_hash=token_hash(token),
                    account_id=found.id,
                    channel=CHANNEL,
                    created_at=now,
                    expires_at=now + ttl,
                    role=role,
                )
            )
            issued = IssuedToken(token, found, now + ttl, role)
            after(then, conn, issued)
            return issued

    def redeem(self, token: str, chat_id: str, now: datetime) -> LinkedAccount:
        """Spend `token` and link `chat_id` to its account as the token's role (a chat
        linked as holder and opening an approver's link becomes its approver; an approver
        opening a holder's link stays one), in one transaction; LinkRefused
        (nothing written) if it is unknown, expired or used by another chat. The same chat
        using it again is answered as linked: the bot may handle one update twice after a
        crash (see paysched.bot.updates), and that chat's link is there."""
        if not token or len(token) > TOKEN_MAX:
            raise LinkRefused("unknown")
        digest = token_hash(token)
        lt = t.link_tokens.c
        with self.engine.begin() as conn:
            # The compare-and-set: only an unused, unexpired token matches, once.
            spent = conn.execute(
                update(t.link_tokens)
                .where(lt.token_hash == digest, lt.used_at.is_(None), lt.expires_at > now)
                .values(used_at=now, used_by=chat_id)
            )
            row = conn.execute(
                select(lt.account_id, lt.used_by, lt.expires_at, lt.role).where(
                    lt.token_hash == digest
                )
            ).first()
            if row is None:
                raise LinkRefused("unknown")
            if spent.rowcount != 1:
                if row.used_by is None:
                    raise LinkRefused("expired")
                if row.used_by != chat_id:
                    raise LinkRefused("used")
            account = account_from(
                conn.execute(select(t.accounts).where(t.accounts.c.id == row.account_id)).one()
            )
            if spent.rowcount == 1:
                _link(conn, account.id, chat_id, now, row.role)
            cl = t.chat_links.c
            role = conn.execute(
                select(cl.role).where(
                    cl.account_id == account.id, cl.channel == CHANNEL, cl.chat_id == chat_id
                )
            ).scalar()
            return LinkedAccount(account, role or row.role)

    # -- links ---------------------------------------------------------------------------------

    def links_of(self, account: str) -> list[ChatLink]:
        with reading(self.engine) as conn:
            found = _account(conn, account)
            return _links(conn, and_(t.chat_links.c.account_id == found.id))

    def unlink(
        self,
        account: str,
        link_id: int | None,
        chat_id: str | None,
        then: AfterWrite | None = None,
    ) -> ChatLink:
        """Remove one link of `account`, by its id or its chat; NotFound if it has none such.
        `then` runs in the same transaction with the removed ChatLink."""
        cl = t.chat_links.c
        with self.engine.begin() as conn:
            found = _account(conn, account)
            which = cl.id == link_id if link_id is not None else cl.chat_id == chat_id
            links = _links(conn, and_(cl.account_id == found.id, which))
            if not links:
                what = f"id {link_id}" if link_id is not None else f"chat {chat_id}"
                raise NotFound(f"account {found.name!r} has no link with {what}")
            conn.execute(delete(t.chat_links).where(cl.id == links[0].id))
            after(then, conn, links[0])
            return links[0]

    def accounts_of_chat(self, chat_id: str) -> list[Account]:
        """The accounts a chat speaks for, by name: none for a chat nobody linked."""
        cl = t.chat_links.c
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(t.accounts)
                .join(t.chat_links, cl.account_id == t.accounts.c.id)
                .where(cl.channel == CHANNEL, cl.chat_id == chat_id)
                .order_by(t.accounts.c.name)
            )
            return [account_from(r) for r in rows]

    def links_of_chat(self, chat_id: str) -> list[LinkedAccount]:
        """accounts_of_chat with each link's role."""
        cl = t.chat_links.c
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(t.accounts, cl.role.label("link_role"))
                .join(t.chat_links, cl.account_id == t.accounts.c.id)
                .where(cl.channel == CHANNEL, cl.chat_id == chat_id)
                .order_by(t.accounts.c.name)
            )
            return [LinkedAccount(account_from(r), r.link_role) for r in rows]

    # -- the bot's position in its updates -----------------------------------------------------

    def update_offset(self) -> int:
        """The first Telegram update_id not yet handled (0: none handled yet)."""
        m = t.meta.c
        with reading(self.engine) as conn:
            value = conn.execute(select(m.value).where(m.key == OFFSET_KEY)).scalar()
        return int(value) if value is not None else 0

    def handled(self, update_id: int) -> None:
        """Update `update_id` is handled: the next start asks from the one after it. Never
        moves back (a late webhook retry of an older update changes nothing)."""
        m = t.meta.c
        offset = str(update_id + 1)
        with self.engine.begin() as conn:
            current = conn.execute(
                select(m.value).where(m.key == OFFSET_KEY).with_for_update()
            ).scalar()
            if current is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(t.meta).values(key=OFFSET_KEY, value=offset))
                    return
                except ConstraintViolation:  # another process wrote it first: compare as usual
                    current = conn.execute(select(m.value).where(m.key == OFFSET_KEY)).scalar()
            if current is None or int(current) < update_id + 1:
                conn.execute(update(t.meta).where(m.key == OFFSET_KEY).values(value=offset))


def _account(conn: Connection, name: str) -> Account:
    """A user account by name (as the store looks it up); NotFound otherwise."""
    try:
        name = normalise_name(name)
    except InvalidInput:  # a name no account can have names none
        raise NotFound(f"no account named {name!r}") from None
    a = t.accounts.c
    row = conn.execute(select(t.accounts).where(a.name == name, a.kind == "user")).first()
    if row is None:
        raise NotFound(f"no account named {name!r}")
    return account_from(row)


def _link(conn: Connection, account_id: int, chat_id: str, now: datetime, role: str) -> None:
    """The link, unless that chat is already linked to that account (a second token): then
    an approver's token makes it the approver; a holder's token demotes nobody."""
    cl = t.chat_links.c
    exists = conn.execute(
        select(cl.id, cl.role).where(
            cl.account_id == account_id, cl.channel == CHANNEL, cl.chat_id == chat_id
        )
    ).first()
    if exists is not None and role == "approver" and exists.role != "approver":
        conn.execute(update(t.chat_links).where(cl.id == exists.id).values(role=role))
    if exists is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(t.chat_links).values(
                        account_id=account_id,
                        channel=CHANNEL,
                        chat_id=chat_id,
                        created_at=now,
                        role=role,
                    )
                )
        except ConstraintViolation:  # the same chat's other token, at the same moment: linked
            pass


def _links(conn: Connection, where: ColumnElement[bool]) -> list[ChatLink]:
    cl = t.chat_links.c
    rows = conn.execute(
        select(t.chat_links, t.accounts.c.name)
        .join(t.accounts, t.accounts.c.id == cl.account_id)
        .where(where)
        .order_by(cl.id)
    )
    return [ChatLink(r.id, r.name, r.channel, r.chat_id, r.created_at, r.role) for r in rows]
