"""Who is calling: API keys (`Authorization: Bearer <key>`), their scopes, a per-key rate limit.

Keys are looked up by their public prefix and compared by hash in constant time (see
db.apikeys); a key never reaches a log (the redaction filter masks `Bearer ...`). Revocation
takes effect on the next request: nothing is cached. `last_used_at` is written at most once a
minute per key, so a busy client does not turn every read into a write.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paysched.api.problems import Problem
from paysched.db.apikeys import ApiKey, ApiKeys

TOUCH_EVERY = timedelta(minutes=1)

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `paysched apikeys create NAME --scope read|write|approve|admin`.",
)


@dataclass
class TokenBucket:
    """`rate` requests per second on average, bursts up to `burst`."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = field(default_factory=time.monotonic)

    def take(self, now: float) -> float:
        """0 if a request may go now, else the seconds until one may."""
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Per API key, in this process (several API processes each allow the rate)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._buckets: dict[int, TokenBucket] = {}
        self._lock = threading.Lock()

    def wait_for(self, key_id: int) -> float:
        with self._lock:
            bucket = self._buckets.setdefault(key_id, TokenBucket(self.rate, 2.0 * self.rate))
            return bucket.take(time.monotonic())


@dataclass
class Guard:
    keys: ApiKeys
    limiter: RateLimiter
    db: Callable[..., Awaitable[object]]
    now: Callable[[], datetime]
    _touched: dict[int, datetime] = field(default_factory=dict)

    async def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
        challenge = {"WWW-Authenticate": 'Bearer realm="paysched"'}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(
                401,
                "unauthenticated",
                "send an API key in the Authorization header, with the Bearer scheme",
                "Authorization",
                challenge,
            )
        found = await self.db(self.keys.verify, credentials.credentials)
        if not isinstance(found, ApiKey):
            raise Problem(
                401, "invalid_key", "the API key is unknown or revoked", "Authorization", challenge
            )
        return await self.admit(found)

    async def admit(self, found: ApiKey) -> ApiKey:
        """A request of a live key, however it was found (a Bearer key here, a dashboard
        session in web.auth): counted against the key's rate limit, its last use noted."""
        wait = self.limiter.wait_for(found.id)
        if wait > 0:
            raise Problem(
                429,
                "rate_limited",
                f"more than {self.limiter.rate} requests per second with this key; slow down",
                None,
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        now = self.now()
        last = self._touched.get(found.id)
        if last is None or now - last >= TOUCH_EVERY:
            self._touched[found.id] = now
            await self.db(self.keys.touch, found.id, now)
        return found


def scope(needed: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency: the caller's key, which must allow `needed` (read < write < admin)."""

    async def check(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> ApiKey:
        guard: Guard = request.app.state.guard
        key = await guard.authenticate(credentials)
        if not key.allows(needed):
            raise Problem(
                403,
                "insufficient_scope",
                f"this needs a key with scope {needed!r} or above; this key has {key.scope!r}",
            )
        request.state.api_key = key
        return key

    return check


Read = Depends(scope("read"))
Write = Depends(scope("write"))
Admin = Depends(scope("admin"))
Approve = Depends(scope("approve"))
