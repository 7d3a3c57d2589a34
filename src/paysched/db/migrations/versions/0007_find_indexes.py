"""Indexes for finding payments (db/store/finds.py): by account, as payer or as payee, and by
currency, newest first; occurrences by the provider's reference (only those that have one);
an account's ledger entries newest first, replacing the index on account_id alone.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_payments_payer_id_id", "payments", ["payer_id", "id"]),
    ("ix_payments_payee_id_id", "payments", ["payee_id", "id"]),
    ("ix_payments_currency_id", "payments", ["currency", "id"]),
    ("ix_ledger_entries_account_id_id", "ledger_entries", ["account_id", "id"]),
)
HAS_REFERENCE = sa.text("reference IS NOT NULL")


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    op.create_index(
        "ix_occurrences_reference",
        "occurrences",
        ["reference"],
        postgresql_where=HAS_REFERENCE,
        sqlite_where=HAS_REFERENCE,
    )
    op.drop_index("ix_ledger_entries_account_id", table_name="ledger_entries")


def downgrade() -> None:
    op.create_index("ix_ledger_entries_account_id", "ledger_entries", ["account_id"])
    op.drop_index("ix_occurrences_reference", table_name="occurrences")
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
