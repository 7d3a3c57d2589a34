"""Idempotency keys of the HTTP API's POST requests.

A request with a key first *reserves* it (its own short transaction): a new key is inserted
`in_flight` with an owner and a lease. The change the request makes then *completes* it in the
change's own transaction (`completion`), storing the status and body it answers with; if the
change fails, the reservation is *released* and the key is free again. So:

- a replay of a completed key gets the stored answer, and nothing runs again;
- a second request while the first is in flight gets 409 (the lease says someone is at it);
- a request whose process died before its change committed left only the reservation, which
  another request takes over when the lease runs out: the change never happened, so running it
  then is not running it twice. If the first one's change commits after all (it was slow, not
  dead), its completion finds another owner and rolls the change back.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update

from paysched.db import tables as t
from paysched.db.store.base import LostRace
from paysched.errors import ConstraintViolation

K = t.idempotency_keys.c


@dataclass(frozen=True, slots=True)
class Reserved:
    owner: str


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: Any


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used for another request."""


@dataclass(frozen=True, slots=True)
class InFlight:
    """Another request with this key is being handled now."""

    until: datetime


class KeyTaken(Exception):
    """The key exists: a change that reserved it in its own transaction was rolled back."""


Reservation = Reserved | Replay | Mismatch | InFlight
# Called inside the change's transaction with the change's result.
Completion = Callable[[Connection, Any], None]


# A create's two statements of its key, built once: building a statement and its cache key
# cost more CPU than running it.
_RESERVE = insert(t.idempotency_keys)
_COMPLETE = (
    update(t.idempotency_keys)
    .where(K.api_key_id == bindparam("b_api_key_id"), K.key == bindparam("b_key"))
    .where(K.owner == bindparam("b_owner"), K.state == "in_flight")
    .values(state="done", status=bindparam("b_status"), response=bindparam("b_response"))
)


class IdempotencyKeys:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def reserve(
        self, api_key_id: int, key: str, fingerprint: str, now: datetime, lease: timedelta
    ) -> Reservation:
        owner = secrets.token_hex(16)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t.idempotency_keys).values(
                        api_key_id=api_key_id,
                        key=key,
                        fingerprint=fingerprint,
                        state="in_flight",
                        owner=owner,
                        locked_until=now + lease,
                        created_at=now,
                    )
                )
            return Reserved(owner)
        except ConstraintViolation:
            pass  # the key exists: replay, refuse, or take over an abandoned reservation
        with self.engine.begin() as conn:
            row = conn.execute(
                select(t.idempotency_keys)
                .where(K.api_key_id == api_key_id, K.key == key)
                .with_for_update()
            ).first()
            if row is None:  # purged meanwhile: a fresh start
                return self.reserve(api_key_id, key, fingerprint, now, lease)
            if row.fingerprint != fingerprint:
                return Mismatch()
            if row.state == "done":
                return Replay(int(row.status), json.loads(row.response))
            if row.locked_until > now:
                return InFlight(row.locked_until)
            conn.execute(
                update(t.idempotency_keys)
                .where(K.id == row.id)
                .values(owner=owner, locked_until=now + lease)
            )
            return Reserved(owner)

    def reservation(
        self,
        api_key_id: int,
        key: str,
        fingerprint: str,
        now: datetime,
        lease: timedelta,
        owner: str,
    ) -> Callable[[Connection], None]:
        """`reserve` for a new key as the first statement of the change's own transaction: one
        transaction for the whole request instead of two (or three). If the key exists (a
        replay, another body, a request still in flight: a concurrent one holding it waits
        for that to commit), KeyTaken rolls the change back and the caller goes through
        `reserve`, which tells which."""

        def reserve(conn: Connection) -> None:
            try:
                conn.execute(
                    _RESERVE,
                    dict(
                        api_key_id=api_key_id,
                        key=key,
                        fingerprint=fingerprint,
                        state="in_flight",
                        owner=owner,
                        locked_until=now + lease,
                        created_at=now,
                    ),
                )
            except ConstraintViolation as exc:
                raise KeyTaken(key) from exc

        return reserve

    def completion(
        self, api_key_id: int, key: str, owner: str, status: int, body: Callable[[Any], Any]
    ) -> Completion:
        """Store `status` and `body(result)` for the key, in the caller's transaction; raises
        LostRace (rolling the change back) if the reservation is no longer this request's."""

        def complete(conn: Connection, result: Any) -> None:
            done = conn.execute(
                _COMPLETE,
                dict(
                    b_api_key_id=api_key_id,
                    b_key=key,
                    b_owner=owner,
                    b_status=status,
                    b_response=json.dumps(body(result)),
                ),
            ).rowcount
            if done != 1:
                raise LostRace(f"idempotency key {key!r} was taken over; nothing was changed")

        return complete

    def release(self, api_key_id: int, key: str, owner: str) -> None:
        """The change failed and wrote nothing: the key is free for another try."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(t.idempotency_keys)
                .where(K.api_key_id == api_key_id, K.key == key, K.owner == owner)
                .where(K.state == "in_flight")
            )

    def purge(self, before: datetime) -> int:
        """Forget keys created before `before` (at least 30 days by default)."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(delete(t.idempotency_keys).where(K.created_at < before)).rowcount
            )
