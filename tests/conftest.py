"""Shared fixtures: real Redis, real SQLite and PostgreSQL, isolated per test.

Every test gets its own Redis key prefix and its own database (an SQLite file, or a PostgreSQL
database created for it), so parallel runs never collide. Tests that break a server start their
own (see `private_redis`). A missing server skips locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from paysched.app import App
from paysched.config import Settings
from paysched.db.store import Store
from paysched.redis_server import RedisProcess

SHARED_REDIS = os.environ.get("PAYSCHED_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN = os.environ.get("PAYSCHED_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# A redis-server of the test's own, on a free port, that the test may flush, kill or restart.
PrivateRedis = RedisProcess


def unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI but not reachable")
    pytest.skip(f"{what} not reachable")


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll an async condition until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_sync(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis (CI starts one). On a laptop without Redis, one private server for
    the whole session, so the suite still runs everything against a real server."""
    client = redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1)
    try:
        client.ping()
        yield SHARED_REDIS
        return
    except redis.RedisError:
        if IN_CI:
            unavailable(f"Redis at {SHARED_REDIS}")
    finally:
        client.close()
    server = PrivateRedis(tmp_path_factory.mktemp("session-redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_prefix(shared_redis_url: str) -> Iterator[str]:
    prefix = f"paysched-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(shared_redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def _pg_admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        unavailable(f"PostgreSQL at {PG_ADMIN}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"paysched_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'paysched.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def make_env(**overrides: str) -> dict[str, str]:
    env = {
        "PAYSCHED_BACKOFF_MS": "200",
        "PAYSCHED_BACKOFF_JITTER": "0.2",
        "PAYSCHED_LOCK_MS": "2000",
        "PAYSCHED_TICK_CRON": "* * * * * *",
        "PAYSCHED_LOOKAHEAD": "1m",
        "PAYSCHED_SHUTDOWN_GRACE": "5s",
        "PAYSCHED_EMBEDDED_REDIS": "never",
    }
    env.update(overrides)
    return env


@pytest.fixture
def env(
    database_url: str, shared_redis_url: str, redis_prefix: str, tmp_path: Path
) -> dict[str, str]:
    """Environment for a paysched process (or Settings.from_env) isolated to this test."""
    return make_env(
        DATABASE_URL=database_url,
        REDIS_URL=shared_redis_url,
        PAYSCHED_QUEUE_PREFIX=redis_prefix,
        PAYSCHED_DATA_DIR=str(tmp_path / "data"),
    )


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated store on the test's own database (SQLite file or PostgreSQL database)."""
    s = Store.connect(database_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    instance = await App.open(settings)
    yield instance
    await instance.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
