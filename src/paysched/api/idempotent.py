"""Idempotency-Key on POST: the answer to a request is stored with the change it made.

The flow is in db.idempotency; this is its HTTP face. A replay answers the stored status and
body with `Idempotent-Replayed: true`; the same key with another method, path or body is 422;
the same key while its first request is still running is 409 with Retry-After (a create waits
for it instead, then replays: it reserves its key in its own transaction, see `once_in_one`).
A request that fails (4xx or 5xx) stores nothing: the key can be used again for the corrected
request.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from paysched.api.problems import Problem
from paysched.db.apikeys import ApiKey
from paysched.db.idempotency import IdempotencyKeys, InFlight, KeyTaken, Mismatch, Replay
from paysched.db.store.base import AfterWrite

T = TypeVar("T")
# How long a request may hold its key before another may take it over: far longer than any
# request runs (database calls time out well before), short enough that a key whose process
# died is usable again within a minute.
LEASE = timedelta(seconds=60)
KEY_DESCRIPTION = (
    "Any unique string (1-255 printable ASCII characters, e.g. a UUID). A retry with the same "
    "key and body replays the first answer instead of acting twice; keys are kept 30 days."
)

IdempotencyKey = Header(
    None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[\x21-\x7e]+$",
    description=KEY_DESCRIPTION,
)


async def fingerprint(request: Request) -> str:
    raw = await request.body()
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = raw
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


@dataclass(frozen=True)
class Seal:
    """What of an answer must not be stored as it is (a secret made for the caller): `close`
    turns the answer into what is stored, `open` turns what is stored back into the answer
    a replay gives — from something only the caller holds, never from the database alone."""

    close: Callable[[Any], Any]
    open: Callable[[Any], Any]


async def once(
    request: Request,
    caller: ApiKey,
    key: str | None,
    status: int,
    run: Callable[[AfterWrite | None], Awaitable[T]],
    body: Callable[[T], Any],
    seal: Seal | None = None,
) -> JSONResponse:
    """Run the change `run(hook)` at most once per idempotency key; `hook` must be called by
    the store inside the change's transaction (the `then=` of its write methods). With a
    `seal`, the answer is stored closed and a replay opens it."""
    if key is None:
        return JSONResponse(body(await run(None)), status_code=status)
    keys: IdempotencyKeys = request.app.state.idempotency
    db = request.app.state.paysched.db
    now: datetime = request.app.state.paysched.clock.now()
    reservation = await db(keys.reserve, caller.id, key, await fingerprint(request), now, LEASE)
    if isinstance(reservation, Replay):
        return JSONResponse(
            reservation.body if seal is None else seal.open(reservation.body),
            status_code=reservation.status,
            headers={"Idempotent-Replayed": "true"},
        )
    if isinstance(reservation, Mismatch):
        raise Problem(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request (method, path or body)",
            "Idempotency-Key",
        )
    if isinstance(reservation, InFlight):
        wait = max(1, math.ceil((reservation.until - now).total_seconds()))
        raise Problem(
            409,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still being processed; retry later",
            "Idempotency-Key",
            {"Retry-After": str(min(wait, 5))},
        )
    stored: list[Any] = []

    def answer(result: T) -> Any:
        stored.append(body(result))
        return stored[-1] if seal is None else seal.close(stored[-1])

    hook = keys.completion(caller.id, key, reservation.owner, status, answer)
    try:
        result = await run(hook)
    except BaseException:
        await db(keys.release, caller.id, key, reservation.owner)
        raise
    return JSONResponse(stored[-1] if stored else body(result), status_code=status)


First = Callable[[Connection], None]


async def once_in_one(
    request: Request,
    caller: ApiKey,
    key: str | None,
    status: int,
    run: Callable[[First | None, AfterWrite | None], Awaitable[T]],
    body: Callable[[T], Any],
) -> JSONResponse:
    """`once`, with the key reserved in the change's own transaction (one transaction for
    the request, not two or three): `run(first, then)` must have the store call
    `first(conn)` in that transaction before its own checks, and `then(conn, result)` last.
    A key that exists rolls the change back (KeyTaken) and the request goes the way of
    `once`: replayed, refused, or (an abandoned reservation) run again. One difference:
    a request whose key another is using at that moment waits for it to commit and is then
    replayed, where `once` answered 409 (the reservation is not seen before the commit)."""
    if key is None:
        return JSONResponse(body(await run(None, None)), status_code=status)
    keys: IdempotencyKeys = request.app.state.idempotency
    now: datetime = request.app.state.paysched.clock.now()
    owner = secrets.token_hex(16)
    first = keys.reservation(caller.id, key, await fingerprint(request), now, LEASE, owner)
    stored: list[Any] = []

    def answer(result: T) -> Any:
        stored.append(body(result))
        return stored[-1]

    try:
        result = await run(first, keys.completion(caller.id, key, owner, status, answer))
    except KeyTaken:
        return await once(request, caller, key, status, lambda then: run(None, then), body)
    return JSONResponse(stored[-1] if stored else body(result), status_code=status)
