"""The Alembic migrations produce exactly the schema in db/tables.py, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from paysched.db.store import Store
from paysched.db.tables import metadata


def test_migrations_match_tables(database_url: str) -> None:
    store = Store.connect(database_url)
    try:
        store.migrate()
        store.migrate()  # idempotent: a second start changes nothing
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
        assert diff == []
    finally:
        store.close()
