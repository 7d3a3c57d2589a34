"""What every part of the store shares: `Database` (the engine, its driver errors translated
into paysched's, see db.errors; read connections, the schema, the deployment id), and the
helpers each part uses on a connection (`insert_ignore`, `enqueue_notifications`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, select

from paysched.db import errors, schema
from paysched.db import tables as t
from paysched.db.engine import migrate, reading
from paysched.domain import MAX_ID, OutboxMessage
from paysched.errors import DatabaseError, DatabaseUnavailable, NotFound, PayschedError

# Run inside a write's transaction with its result, before it commits: what must be written
# atomically with the change (the HTTP API's idempotency record) and fail it if it fails.
AfterWrite = Callable[[Connection, Any], None]


def after(hook: AfterWrite | None, conn: Connection, result: Any) -> None:
    if hook is not None:
        hook(conn, result)


P = ParamSpec("P")
R = TypeVar("R")
# PostgreSQL aborts one transaction of a deadlock (40P01) or of a serialization failure
# (40001) so that the others go on; the victim wrote nothing and may simply run again.
VICTIM_SQLSTATES = frozenset({"40P01", "40001"})
VICTIM_ATTEMPTS = 3


def retried_if_victim(write: Callable[P, R]) -> Callable[P, R]:
    """Run a write transaction again (up to VICTIM_ATTEMPTS in all) when PostgreSQL chose it
    as a deadlock's or serialization failure's victim. The locks are taken in one order (see
    payments), so this is the guard for what that order misses: a person's cancel, pause or
    resume answers what is true once the other transaction is done, not a 503."""

    @functools.wraps(write)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 1
        while True:
            try:
                return write(*args, **kwargs)
            except (DatabaseUnavailable, DatabaseError) as exc:
                victim = exc.sqlstate in VICTIM_SQLSTATES
                if not victim or attempt == VICTIM_ATTEMPTS:
                    raise
                attempt += 1

    return run


class LostRace(PayschedError):
    """A compare-and-set matched fewer rows than the locked read promised: the transaction is
    rolled back and nothing of it is written. It never happens while row locks hold; it is the
    SQL-level guarantee for when they do not."""


class Database:
    """The database as a whole: the engine, its dialect, the schema's revision and migration,
    the deployment id. Every part of the store (see paysched.db.store) holds the one of its
    Store."""

    def __init__(self, engine: Engine) -> None:
        errors.install(engine)  # already, if make_engine made it
        self.engine = engine
        self._deployment_id: str | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # A database that does not answer raises DatabaseUnavailable (see db.errors) from each.
    def migrate(self) -> None:
        migrate(self.engine)

    def schema_revision(self) -> str | None:
        """The database's schema revision (None: a fresh database), with one query."""
        with self.reading() as conn:
            return schema.read_revision(conn)

    def ensure_schema(self, *, migrate: bool = True) -> tuple[str | None, str | None]:
        """Check the schema's revision (one query) and migrate if needed: a fresh database
        always, an older one only if `migrate` (else SchemaMismatch naming `paysched
        migrate`); a newer paysched's schema never. Returns the revision (before, after).

        At the head nothing else runs: Alembic is not even imported (~0.3 s per process)."""
        before = self.schema_revision()
        if not schema.needs_migration(before, migrate=migrate):
            return before, before
        self.migrate()
        return before, self.schema_revision()

    def ping(self) -> None:
        with self.reading() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        self.engine.dispose()

    def deployment_id(self) -> str:
        """This database's identity, created by the migration that added it. Every queue job
        carries it, so that a worker can tell a job of another deployment sharing its Redis."""
        if self._deployment_id is None:
            with self.reading() as conn:
                value = conn.execute(
                    select(t.meta.c.value).where(t.meta.c.key == "deployment_id")
                ).scalar_one()
            self._deployment_id = str(value)
        return self._deployment_id

    def reading(self) -> Connection:
        """A connection for reads only (never blocked by a writer on SQLite's WAL)."""
        return reading(self.engine)


def insert_ignore(dialect: str, table: Any, conflict_columns: list[str] | None) -> Any:
    """INSERT ... ON CONFLICT [(conflict_columns)] DO NOTHING; None: on any unique index.
    `dialect`: the engine's (Database.dialect, or a connection's `dialect.name`)."""
    # The dialect's module only: importing both costs a command ~40 ms for nothing.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)


def enqueue_notifications(conn: Connection, outbox: Sequence[OutboxMessage], now: datetime) -> None:
    """Write the outbox rows in `conn`'s transaction (one per dedup key: a repeat is skipped)."""
    if not outbox:
        return
    conn.execute(
        insert_ignore(conn.dialect.name, t.notifications, ["dedup_key"]),
        [
            dict(
                dedup_key=msg.dedup_key,
                payment_id=msg.payment_id,
                occurrence_id=msg.occurrence_id,
                event=msg.event,
                channel=msg.channel,
                target=msg.target,
                payload=msg.payload,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            for msg in outbox
        ],
    )


def existing_id(value: int, what: str) -> None:
    """NotFound for an id no row can have (PostgreSQL's ids are 32-bit): it never reaches SQL,
    where it would be a database error rather than 'not found'."""
    if not 0 < value <= MAX_ID:
        raise NotFound(f"no {what} with id {value}")


def short_error(exc: BaseException) -> str:
    """The first line of an error (a driver's own for a database error), or its type name."""
    lines = str(getattr(exc, "orig", exc)).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
