"""Which schema revision paysched needs, and which one a database has: one query, no Alembic.

Importing Alembic and loading the migration scripts costs ~0.3 s; a command that only reads
compares the database's `alembic_version` with HEAD_REVISION instead, and migrates only when
it has to (see `Database.ensure_schema`). tests/unit/test_schema_head.py asserts REVISIONS
is the chain of the scripts in migrations/versions, so a new migration cannot forget it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paysched.errors import DatabaseError, DatabaseUnavailable, SchemaMismatch

if TYPE_CHECKING:
    from sqlalchemy import Connection

# Every revision of migrations/versions, oldest first; the last one is the head.
REVISIONS = (
    "0001",
    "0002",
    "0003",
    "0004",
    "0005",
    "0006",
    "0007",
    "0008",
    "0009",
    "0010",
    "0011",
    "0012",
)
HEAD_REVISION = REVISIONS[-1]
VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps


def read_revision(conn: Connection) -> str | None:
    """The database's revision; None when it has none yet (no version table, or an empty one:
    a fresh database). One query in the usual case; a second look only when it fails, to tell
    a missing table from any other error (which is raised)."""
    from sqlalchemy import inspect, text

    try:
        rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    except (DatabaseError, DatabaseUnavailable):  # SQLite's "no such table" is operational
        conn.rollback()  # PostgreSQL refuses further statements in a failed transaction
        if inspect(conn).has_table(VERSION_TABLE):
            raise
        return None
    if len(rows) > 1:  # Alembic's branches: paysched has none, so not a schema it wrote
        raise SchemaMismatch(
            f"the database schema has several revisions ({', '.join(sorted(rows))}); this "
            f"paysched knows one chain up to {HEAD_REVISION}"
        )
    return str(rows[0]) if rows else None


def needs_migration(current: str | None, *, migrate: bool) -> bool:
    """Whether to run the migrations, given the database's revision; SchemaMismatch when
    the database is older and `migrate` is off, or when it is of a newer paysched."""
    if current == HEAD_REVISION:
        return False
    if current is None:
        return True  # a fresh database: nothing in it to lose, whoever opens it
    if current not in REVISIONS:
        raise SchemaMismatch(
            f"the database schema is at revision {current}, which this paysched does not know "
            f"(its newest is {HEAD_REVISION}): a newer paysched migrated it; upgrade paysched",
            current=current,
        )
    if migrate:
        return True
    raise SchemaMismatch(
        f"the database schema is at revision {current}, this paysched needs {HEAD_REVISION}: "
        "run `paysched migrate`",
        current=current,
    )
