"""Every engine paysched hooks translates its driver's errors, also one SQLAlchemy's event
registry confuses with a dead engine: the registry keys a listener by id(engine) and keeps a
dead engine's key while that engine's dialect lives, so a new engine at the freed address read
as hooked already and its errors escaped raw (a test's fresh SQLite "no such table", now and
then)."""

from __future__ import annotations

import gc

import pytest
from sqlalchemy import Engine, create_engine, text

from paysched.db import errors
from paysched.errors import DatabaseError, DatabaseUnavailable


def _at(address: int) -> Engine | None:
    """A new engine at `address`, if CPython hands the freed block back soon (it does)."""
    for _ in range(50):
        engine = create_engine("sqlite://")
        if id(engine) == address:
            return engine
        engine.dispose()
    return None


def test_an_engine_at_a_dead_engines_address_is_hooked_too() -> None:
    kept = []  # the dead engines' dialects, and with them their listener collections
    for _ in range(100):
        dead = create_engine("sqlite://")
        errors.install(dead)
        address = id(dead)
        kept.append(dead.dialect)
        del dead
        gc.collect()
        engine = _at(address)
        if engine is None:
            continue
        errors.install(engine)
        with engine.connect() as conn, pytest.raises((DatabaseError, DatabaseUnavailable)) as raw:
            conn.execute(text("SELECT version_num FROM no_such_table"))
        assert "no such table" in str(raw.value)
        return
    pytest.fail("no new engine took a dead engine's address: the case was not exercised")
