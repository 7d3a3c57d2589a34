"""The store as a process sets it up from its Settings: App (its database threads share it)
and the CLI's quick commands (one connection, on the calling thread) both start here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from paysched import redaction
from paysched.config import Settings
from paysched.db.store import Store


def connect_store(settings: Settings, *, pool_size: int) -> Store:
    """The store on the configured database, `pool_size` connections at most, its schema not
    yet looked at. The settings' secrets are masked in every log record from here on."""
    redaction.remember(settings.secrets())
    redaction.install()
    return Store.connect(
        settings.database_url, pool_size=pool_size, late_after=settings.catchup_late_after
    )


@contextlib.contextmanager
def open_store(settings: Settings, *, migrate: bool, check: bool = True) -> Iterator[Store]:
    """The store for a command that runs its queries one after the other on this thread (one
    connection), its schema checked: at the head, or migrated when `migrate` (a fresh
    database is migrated either way), else SchemaMismatch. `check=False` leaves the schema as
    it is (for `paysched migrate`, which reports it)."""
    store = connect_store(settings, pool_size=1)
    try:
        if check:
            store.ensure_schema(migrate=migrate)
        yield store
    finally:
        store.close()
