"""Repository of the dashboard's sign-ins (table dashboard_sessions).

The browser's cookie holds a random token and nothing else; the database holds only its
SHA-256, mapped to the API key it signed in with. A stolen database row opens nothing, and the
API key itself never travels after the sign-in form. A session ends when it is signed out, after
`idle` without a request, after `lifetime` whatever happens, and as soon as its key is revoked
(every lookup joins the key's row: nothing is cached).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, bindparam, delete, insert, or_, select, update

from paysched.db import tables as t
from paysched.db.apikeys import ApiKey
from paysched.db.engine import reading

# last_seen_at is written at most this often per session, so that browsing the dashboard is
# not one write per request (idle expiry is exact to this much).
TOUCH_EVERY = timedelta(minutes=1)
TOKEN_MAX = 100  # token_urlsafe(32) is 43 characters; anything much longer is not one of ours
# Why a cookie opens no session: signed out (or never one of ours), its key revoked, past its
# lifetime, idle too long.
ENDED = ("unknown", "revoked", "lifetime", "idle")

s, k = t.dashboard_sessions, t.api_keys
# Every request's lookup, built once (as db.apikeys' is): the session and its key, in one trip.
_FIND = (
    select(
        s.c.id.label("session_id"),
        s.c.created_at.label("session_created_at"),
        s.c.last_seen_at,
        s.c.expires_at,
        k,
    )
    .join(k, k.c.id == s.c.api_key_id)
    .where(s.c.token_hash == bindparam("token_hash"))
)


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    key: ApiKey
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DashboardSessions:
    def __init__(self, engine: Engine, idle: timedelta, lifetime: timedelta) -> None:
        self.engine = engine
        self.idle = idle
        self.lifetime = lifetime

    def create(self, api_key_id: int, now: datetime) -> str:
        """A new session of the key: its token, for the cookie (never stored). Ended sessions
        are purged here: signing in is rare enough to carry that cost, and often enough that
        the table stays small."""
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(delete(s).where(self._ended(now)))
            conn.execute(
                insert(s).values(
                    token_hash=token_hash(token),
                    api_key_id=api_key_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + self.lifetime,
                )
            )
        return token

    def find(self, token: str, now: datetime, touch: bool = True) -> Session | None:
        """The live session this token opens, or None (unknown, ended, or its key revoked; an
        ended one is deleted). `touch`: this is a person's request, which keeps the session
        from idling out; a live stream re-checking is not."""
        found = self.find_or_why(token, now, touch)
        return found if isinstance(found, Session) else None

    def find_or_why(
        self, token: str, now: datetime, touch: bool = True, end: bool = True
    ) -> Session | str:
        """`find`, saying why there is none: one of ENDED. An ended session is deleted, so
        only the request that finds it ended can tell why; `end=False` (a live stream's
        check) leaves it for the page request that follows to find and tell."""
        if not token or len(token) > TOKEN_MAX:
            return "unknown"
        with reading(self.engine) as conn:
            row = conn.execute(_FIND, {"token_hash": token_hash(token)}).first()
        if row is None:
            return "unknown"
        why = (
            "revoked"
            if row.revoked_at is not None
            else "lifetime"
            if now >= row.expires_at
            else "idle"
            if now - row.last_seen_at >= self.idle
            else None
        )
        if why is not None:
            if end:
                self.end(token)
            return why
        last_seen = row.last_seen_at
        if touch and now - last_seen >= TOUCH_EVERY:
            last_seen = now
            with self.engine.begin() as conn:
                conn.execute(update(s).where(s.c.id == row.session_id).values(last_seen_at=now))
        key = ApiKey(
            id=row.id,
            name=row.name,
            scope=row.scope,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )
        return Session(row.session_id, key, row.session_created_at, last_seen, row.expires_at)

    def end(self, token: str) -> bool:
        """Sign out: the session's row goes. False if there was none."""
        if not token or len(token) > TOKEN_MAX:
            return False
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(s).where(s.c.token_hash == token_hash(token))).rowcount)

    def _ended(self, now: datetime) -> ColumnElement[bool]:
        revoked = select(k.c.id).where(k.c.revoked_at.is_not(None))
        return or_(
            s.c.expires_at <= now, s.c.last_seen_at <= now - self.idle, s.c.api_key_id.in_(revoked)
        )
