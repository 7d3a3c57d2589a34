from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from paysched.config import Settings
from paysched.errors import ConfigError
from paysched.redis_client import describe, sentinel_target


def test_defaults_follow_the_seed() -> None:
    s = Settings.from_env({"HOME": "/home/u"})
    assert s.redis_url == "redis://localhost:6379/0"
    assert not s.redis_explicit
    assert (s.concurrency, s.attempts, s.backoff_ms) == (3, 3, 2000)
    assert s.tick_cron == "* * * * *"
    assert s.lookahead == timedelta(minutes=5)
    assert s.data_dir == Path("/home/u/.local/share/paysched")
    assert s.database_url == "sqlite:////home/u/.local/share/paysched/paysched.db"


def test_redis_host_port_password() -> None:
    s = Settings.from_env({"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_PASSWORD": "p@ss"})
    assert s.redis_url == "redis://:p%40ss@cache:6380/0"
    assert s.redis_explicit


def test_redis_url_wins() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://r:1/2", "REDIS_HOST": "ignored"})
    assert s.redis_url == "redis://r:1/2"


def test_redis_sentinels_name_the_primary_with_both_passwords_kept_apart() -> None:
    s = Settings.from_env(
        {
            "REDIS_SENTINELS": "s1:26379, [::1]:26380",
            "REDIS_SENTINEL_MASTER": "main pool",
            "REDIS_PASSWORD": "data p@ss",
            "REDIS_SENTINEL_PASSWORD": "sent&pass",
        }
    )
    assert s.redis_explicit
    target = sentinel_target(s.redis_url)
    assert target is not None
    assert target.nodes == (("s1", 26379), ("::1", 26380))
    assert (target.master, target.db) == ("main pool", 0)
    assert (target.password, target.sentinel_password) == ("data p@ss", "sent&pass")
    # Neither password reaches a log line; both are known secrets.
    assert "p@ss" not in describe(s.redis_url) and "sent&pass" not in describe(s.redis_url)
    assert {"data p@ss", "data%20p%40ss", "sent&pass"} <= set(s.secrets())
    # The one URL it is written as is accepted as REDIS_URL too.
    assert Settings.from_env({"REDIS_URL": s.redis_url}).redis_url == s.redis_url


@pytest.mark.parametrize(
    ("env", "variable", "problem"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER", "is required"),
        (
            {"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINELS",
            "not host:port",
        ),
        (
            {"REDIS_SENTINELS": "s1:0", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINELS",
            "between 1 and 65535",
        ),
        (
            {"REDIS_SENTINELS": " , ", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINELS",
            "no sentinel named",
        ),
        (
            {"REDIS_SENTINELS": "s1:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis://h"},
            "REDIS_URL",
            "cannot be used with REDIS_SENTINELS",
        ),
        ({"REDIS_URL": "redis+sentinel://s1:1"}, "REDIS_URL", "no primary name"),
    ],
)
def test_redis_sentinel_mistakes_name_the_variable(
    env: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert err.value.variable == variable
    assert problem in str(err.value)


def test_postgres_urls_use_psycopg() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"})
    assert s.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        # libpq's multi-host form, which SQLAlchemy's make_url cannot parse (the port
        # "5432,h2:5433" is not a number): rewritten to the query form it reads.
        (
            "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgresql+psycopg://u@/db?host=h1,h2&port=5432,5433&target_session_attrs=read-write",
        ),
        (
            "postgres://u:p%40w@h1,[::1]:6000/db",
            "postgresql+psycopg://u:p%40w@/db?host=h1,::1&port=5432,6000",
        ),
        # SQLAlchemy's documented form passes through.
        (
            "postgresql://u@/db?host=h1:5432&host=h2:5433",
            "postgresql+psycopg://u@/db?host=h1:5432&host=h2:5433",
        ),
    ],
)
def test_multi_host_postgres_urls(given: str, normalised: str) -> None:
    assert Settings.from_env({"DATABASE_URL": given}).database_url == normalised
    # ...and the engine hands psycopg every host with its port.
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(normalised)
    _, params = create_engine(url).dialect.create_connect_args(url)
    assert params["host"].count(",") == 1 and params["port"].count(",") == 1


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("postgresql://u@h1:x,h2/db", "the port of host 'h1:x'"),
        ("postgresql://u@h1:70000,h2/db", "between 1 and 65535"),
        ("postgresql://u@h1:5432,/db", "cannot read host ''"),
        ("postgresql://u@h1,h2/db?host=h3", "not both"),
        ("postgresql://u@/db?host=h1:5432&host=h2:x", "cannot read ?host=h2:x"),
    ],
)
def test_bad_multi_host_postgres_urls(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DATABASE_URL": value})
    assert caught.value.variable == "DATABASE_URL" and problem in caught.value.problem


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PAYSCHED_CONCURRENCY", "three", "expected an integer"),
        ("PAYSCHED_CONCURRENCY", "0", "between 1 and"),
        ("REDIS_PORT", "99999", "between 1 and 65535"),
        ("REDIS_URL", "localhost:6379", "expected redis://"),
        ("DATABASE_URL", "mysql://x", "sqlite:/// or postgresql://"),
        ("PAYSCHED_TICK_CRON", "every minute", "cron"),
        ("PAYSCHED_LOOKAHEAD", "5 minutes", "duration"),
        ("PAYSCHED_BACKOFF_JITTER", "2", "between 0 and 1"),
        ("PAYSCHED_EMBEDDED_REDIS", "maybe", "auto, always or never"),
        ("PAYSCHED_LOG_LEVEL", "LOUD", "one of"),
        ("PAYSCHED_CATCHUP_LATE_AFTER", "a while", "duration"),
        ("PAYSCHED_CATCHUP_LATE_AFTER", "0s", "at least"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    assert info.value.variable == variable
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{variable}: ")


def test_catchup_late_after_is_a_duration() -> None:
    assert Settings.from_env({}).catchup_late_after == timedelta(seconds=60)
    env = {"PAYSCHED_CATCHUP_LATE_AFTER": "1s"}
    assert Settings.from_env(env).catchup_late_after == timedelta(seconds=1)
    env = {"PAYSCHED_CATCHUP_LATE_AFTER": "250ms"}
    assert Settings.from_env(env).catchup_late_after == timedelta(milliseconds=250)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PAYSCHED_EXECUTOR": "stripe"}, "PAYSCHED_EXECUTOR"),
        ({"PAYSCHED_EXECUTOR": "my.module:"}, "PAYSCHED_EXECUTOR"),
        ({"PAYSCHED_EXECUTOR": "http"}, "PAYSCHED_PROVIDER_URL"),
        (
            {"PAYSCHED_EXECUTOR": "http", "PAYSCHED_PROVIDER_URL": "ftp://x"},
            "PAYSCHED_PROVIDER_URL",
        ),
        ({"PAYSCHED_RESOLVE_WINDOW": "soon"}, "PAYSCHED_RESOLVE_WINDOW"),
    ],
)
def test_executor_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert err.value.variable == variable


def test_the_provider_token_never_reaches_repr() -> None:
    s = Settings.from_env(
        {
            "PAYSCHED_EXECUTOR": "http",
            "PAYSCHED_PROVIDER_URL": "https://p",
            "PAYSCHED_PROVIDER_TOKEN": "sk_live_123",
        }
    )
    assert s.executor == "http" and s.provider_token == "sk_live_123"
    assert "sk_live_123" not in repr(s)


def test_postgresql_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from paysched.db import engine

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "psycopg" else real(name)
    )
    with pytest.raises(ConfigError) as info:
        engine.make_engine("postgresql+psycopg://postgres@127.0.0.1/x")
    assert info.value.variable == "DATABASE_URL" and "paysched[postgresql]" in str(info.value)
