"""Repository of the HTTP API's keys: created and revoked by `paysched apikeys`, checked on
every request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, insert, select, update

from paysched.db import tables as t
from paysched.db.engine import reading
from paysched.domain import normalise_name
from paysched.errors import Conflict, InvalidInput, NotFound

SCOPES = t.API_SCOPES
# A key is "psk_<prefix>_<secret>": the prefix finds the row, the whole key is hashed.
KEY_PREFIX = "psk_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    scope: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def allows(self, needed: str) -> bool:
        """Scopes nest: admin can do what write can, write what read can."""
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _split(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX) or not key.isascii():
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not prefix or len(prefix) > 32 or len(secret) < 20:
        return None
    return prefix


# Run in a key's create or revoke transaction with the key's id.
KeyWrite = Callable[[Connection, int], None]
# Every request's lookup, built once: building a statement and its cache key cost more CPU
# than running it.
_BY_PREFIX = select(t.api_keys).where(t.api_keys.c.prefix == bindparam("prefix"))


class ApiKeys:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self, name: str, scope: str, now: datetime, then: KeyWrite | None = None
    ) -> tuple[ApiKey, str]:
        """A new key: its row and the key itself, which is shown once and never stored.
        `then(conn, id)` runs in the same transaction (who created it: db.actions)."""
        name = normalise_name(name, "name")
        if scope not in SCOPES:
            raise InvalidInput("scope", f"expected one of {', '.join(SCOPES)}, got {scope!r}")
        prefix = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            key_id = conn.execute(
                insert(t.api_keys)
                .values(
                    name=name, scope=scope, prefix=prefix, key_hash=key_hash(key), created_at=now
                )
                .returning(t.api_keys.c.id)
            ).scalar_one()
            if then is not None:
                then(conn, int(key_id))
        return self.get(int(key_id)), key

    def get(self, key_id: int) -> ApiKey:
        with reading(self.engine) as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"no API key with id {key_id}")
        return _from(row)

    def list(self) -> list[ApiKey]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(t.api_keys).order_by(t.api_keys.c.id))
            return [_from(r) for r in rows]

    def revoke(self, key_id: int, now: datetime, then: KeyWrite | None = None) -> ApiKey:
        """`then(conn, key_id)` runs in the same transaction if it revoked the key."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id)
                .where(t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            ).rowcount
            if done and then is not None:
                then(conn, key_id)
        key = self.get(key_id)
        if not done:
            raise Conflict(f"API key {key_id} is already revoked")
        return key

    def verify(self, key: str) -> ApiKey | None:
        """The live key this is, or None: unknown, malformed or revoked. The hash is compared
        in constant time, so a response's timing tells nothing about how much of it matched."""
        prefix = _split(key)
        if prefix is None:
            return None
        with reading(self.engine) as conn:
            row = conn.execute(_BY_PREFIX, {"prefix": prefix}).first()
        if row is None or not hmac.compare_digest(row.key_hash, key_hash(key)):
            return None
        found = _from(row)
        return None if found.revoked_at is not None else found

    def touch(self, key_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.api_keys).where(t.api_keys.c.id == key_id).values(last_used_at=now)
            )


def _from(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        scope=row.scope,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
