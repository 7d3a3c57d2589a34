"""Occurrence states as long as `awaiting_approval` (17 characters): 0011 added the state, but
occurrences.state and the transitions' from_state / to_state were VARCHAR(16), which
PostgreSQL enforces (SQLite does not), so no occurrence could await approval there.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = (
    ("occurrences", "state", False),
    ("transitions", "from_state", True),
    ("transitions", "to_state", False),
)


def upgrade() -> None:
    _retype(sa.String(16), sa.String(24))


def downgrade() -> None:
    _retype(sa.String(24), sa.String(16))


def _retype(was: sa.String, to: sa.String) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA defer_foreign_keys = ON")  # see 0003
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=was, type_=to, existing_nullable=nullable)
