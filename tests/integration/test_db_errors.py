"""The database driver's errors, from a real PostgreSQL, arrive as paysched's own (see
paysched.db.errors), the driver's error kept as the cause; the CLI maps them as it did."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest
import typer
from sqlalchemy import text

from paysched.cli.base import EXIT_INPUT, EXIT_UNAVAILABLE, handled
from paysched.db.store import Store
from paysched.errors import (
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    PayschedError,
    ValueRefused,
)
from paysched.redis_server import free_port
from tests.conftest import PG_ADMIN


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    store = Store.connect(postgres_url)
    store.migrate()
    yield store
    store.close()


def raised(run: Callable[[], object]) -> PayschedError:
    with pytest.raises(PayschedError) as caught:
        run()
    return caught.value


def statement(store: Store, sql: str) -> Callable[[], object]:
    def run() -> object:
        with store.engine.connect() as conn:
            return conn.execute(text(sql)).all()

    return run


def terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        row = admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row == (True,), row


def test_a_refused_connection_is_database_unavailable() -> None:
    store = Store.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    try:
        exc = raised(store.ping)
    finally:
        store.close()
    assert type(exc) is DatabaseUnavailable
    assert str(exc).startswith("database unavailable: ") and "\n" not in str(exc)
    assert isinstance(exc.__cause__, psycopg.OperationalError)  # the driver's own error


def test_a_connection_killed_mid_transaction_is_database_unavailable(pg_store: Store) -> None:
    with pg_store.engine.connect() as conn:
        terminate(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        with pytest.raises(DatabaseUnavailable) as caught:
            conn.execute(text("SELECT 1"))
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert "terminat" in str(caught.value) or "closed" in str(caught.value)
    pg_store.ping()  # the pool replaced the dead connection


def test_a_pooled_connection_killed_while_idle_is_replaced_unseen(pg_store: Store) -> None:
    """The pool's pre-ping finds it dead and reconnects: it expects SQLAlchemy's own error
    there, so the translation leaves that step alone and nobody sees an error."""
    with pg_store.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    terminate(pid)  # back in the pool, idle
    pg_store.ping()
    with pg_store.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_refusals_are_database_errors_with_the_driver_error_as_cause(pg_store: Store) -> None:
    value = raised(statement(pg_store, "SELECT CAST('x' AS integer)"))
    assert type(value) is ValueRefused and str(value).startswith("invalid value: ")
    assert isinstance(value.__cause__, psycopg.errors.InvalidTextRepresentation)
    other = raised(statement(pg_store, "SELECT * FROM no_such_table"))
    assert type(other) is DatabaseError and str(other).startswith("database error: ")
    assert isinstance(other.__cause__, psycopg.errors.UndefinedTable)
    # Inside the store a constraint's refusal is still told apart from the rest.
    pg_store.accounts.create_account("alice", "USD", datetime.now(UTC))
    with pytest.raises(Conflict, match="already exists"):
        pg_store.accounts.create_account("alice", "USD", datetime.now(UTC))


@pytest.mark.parametrize(
    ("sql", "code", "prefix"),
    [
        ("SELECT CAST('x' AS integer)", EXIT_INPUT, "invalid value: "),
        ("SELECT * FROM no_such_table", EXIT_UNAVAILABLE, "database error: "),
    ],
)
def test_the_cli_maps_them_as_before(
    pg_store: Store, capsys: pytest.CaptureFixture[str], sql: str, code: int, prefix: str
) -> None:
    """A value the database refused is the input's fault (2); any other database error is 5,
    as a database that does not answer; one line each, never a traceback."""
    with pytest.raises(typer.Exit) as caught:
        handled(statement(pg_store, sql))()
    assert caught.value.exit_code == code
    err = capsys.readouterr().err
    assert err.startswith(f"error: {prefix}") and err.count("\n") == 1, err


def test_the_cli_says_an_unreachable_database_is_unavailable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = Store.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    try:
        with pytest.raises(typer.Exit) as caught:
            handled(store.ping)()
    finally:
        store.close()
    assert caught.value.exit_code == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.startswith("error: database unavailable: ")
