"""Which Redis to use and whether it answers: shared by App and by the CLI's quick commands.

Apart from App (paysched.app) so that a command which only needs a PING or a count does not
import the queue, executors and notifiers (bullmq, httpx: ~0.2 s per process).
"""

from __future__ import annotations

import asyncio

import redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import NoBackoff

from paysched.config import Settings
from paysched.db.store.base import short_error
from paysched.errors import BackendUnavailable, ConfigError
from paysched.redis_client import describe, redis_client
from paysched.redis_server import EmbeddedRedis, answers


def redacted(url: str) -> str:
    """A Redis/database URL safe for logs: the password replaced (a Sentinel deployment is
    named by its primary and sentinels)."""
    return describe(url)


# A command reports a Redis that does not answer within this long; a service retries.
REDIS_PROBE_TIMEOUT_S = 5.0


async def probe_redis(url: str, timeout: float = REDIS_PROBE_TIMEOUT_S) -> None:
    """One PING, no retries: BackendUnavailable naming the reason within `timeout` seconds."""
    client = redis_client(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except redis.AuthenticationError as exc:
        raise BackendUnavailable(
            f"Redis at {redacted(url)} refused the credentials: {short_error(exc)} (check "
            "REDIS_PASSWORD or the password in REDIS_URL)"
        ) from None
    except MasterNotFoundError:  # its text is the repr of every sentinel client
        raise BackendUnavailable(
            f"Redis at {redacted(url)} unreachable: no sentinel answers with a primary of that "
            "name (see `paysched check` for each sentinel)"
        ) from None
    except redis.ResponseError as exc:  # e.g. NOAUTH: a password is required
        raise BackendUnavailable(f"Redis at {redacted(url)}: {short_error(exc)}") from None
    except (redis.RedisError, OSError, TimeoutError) as exc:
        reason = short_error(exc) or f"no answer within {timeout:g} s"
        raise BackendUnavailable(f"Redis at {redacted(url)} unreachable: {reason}") from None
    finally:
        await client.aclose()


def resolve_redis(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """Which Redis to use: the configured one, localhost:6379 if it answers, else embedded."""
    if settings.embedded_redis == "always":
        embedded = EmbeddedRedis(settings.data_dir)
        return embedded.start(), embedded
    if settings.redis_explicit or answers(settings.redis_url):
        return settings.redis_url, None
    if settings.embedded_redis == "never":
        raise ConfigError(
            "REDIS_URL",
            f"nothing answers at {redacted(settings.redis_url)} and the embedded "
            "server is disabled (PAYSCHED_EMBEDDED_REDIS=never)",
        )
    embedded = EmbeddedRedis(settings.data_dir)
    return embedded.start(), embedded
