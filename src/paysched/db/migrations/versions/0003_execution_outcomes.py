"""Executor outcomes, CHECK constraints and the deployment id.

Occurrences get the columns of the unknown-outcome resolver (resolve_at, resolve_checks), the
provider's reference and a takeover count; every table that has states or amounts gets CHECK
constraints; `meta` holds the deployment id stamped on every queue job this database creates.

Revision ID: 0003
Revises: 0002
"""

import uuid

import sqlalchemy as sa
from alembic import op

from paysched.db.tables import (
    NOTIFICATION_STATES,
    OCCURRENCE_STATES,
    PAYMENT_STATES,
    UTCDateTime,
    _one_of,
)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a CHECK constraint by copying the table; the copy drops the old table,
        # which other tables reference: their foreign keys are checked at commit instead.
        op.execute("PRAGMA defer_foreign_keys = ON")
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )
    op.bulk_insert(meta, [{"key": "deployment_id", "value": uuid.uuid4().hex}])
    with op.batch_alter_table("occurrences") as batch:
        batch.add_column(sa.Column("takeovers", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reference", sa.Text(), nullable=True))
        batch.add_column(sa.Column("resolve_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("resolve_checks", sa.Integer(), nullable=False, server_default="0")
        )
        batch.create_check_constraint("state_valid", _one_of("state", OCCURRENCE_STATES))
        batch.create_check_constraint(
            "counts_valid", "attempts >= 0 AND fence >= 0 AND takeovers >= 0"
        )
    with op.batch_alter_table("payments") as batch:
        batch.create_check_constraint("amount_positive", "amount > 0")
        batch.create_check_constraint("distinct_accounts", "payer_id <> payee_id")
        batch.create_check_constraint("state_valid", _one_of("state", PAYMENT_STATES))
    with op.batch_alter_table("ledger_entries") as batch:
        batch.create_check_constraint("amount_nonzero", "amount <> 0")
    with op.batch_alter_table("notifications") as batch:
        batch.create_check_constraint("state_valid", _one_of("state", NOTIFICATION_STATES))


def downgrade() -> None:
    for table, names in (
        ("notifications", ["state_valid"]),
        ("ledger_entries", ["amount_nonzero"]),
        ("payments", ["amount_positive", "distinct_accounts", "state_valid"]),
        ("occurrences", ["state_valid", "counts_valid"]),
    ):
        with op.batch_alter_table(table) as batch:
            for name in names:
                batch.drop_constraint(f"ck_{table}_{name}", type_="check")
    with op.batch_alter_table("occurrences") as batch:
        for column in ("takeovers", "reference", "resolve_at", "resolve_checks"):
            batch.drop_column(column)
    op.drop_table("meta")
