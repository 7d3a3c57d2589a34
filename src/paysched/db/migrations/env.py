"""Alembic environment: paysched passes its own connection in `config.attributes`."""

from __future__ import annotations

from alembic import context

from paysched.db.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through paysched.db.engine.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
