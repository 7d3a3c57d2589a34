"""Reconciliations with the provider and their discrepancies; a notification may be of no one
payment (a reconciliation's).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from paysched.db.tables import RECONCILIATION_STATES, UTCDateTime, _one_of

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("payment_id", existing_type=sa.Integer(), nullable=True)
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period_from", UTCDateTime(), nullable=False),
        sa.Column("period_to", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor_name", sa.String(100), nullable=True),
        sa.Column("dedup_key", sa.String(120), nullable=True),
        sa.Column("provider_listed", sa.Boolean(), nullable=True),
        sa.Column("counts", sa.Text(), server_default="{}", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliations"),
        sa.UniqueConstraint("dedup_key", name="uq_reconciliations_dedup_key"),
        sa.CheckConstraint(
            _one_of("state", RECONCILIATION_STATES), name="ck_reconciliations_state_valid"
        ),
    )
    op.create_index("ix_reconciliations_created_at", "reconciliations", ["created_at"])
    op.create_table(
        "reconciliation_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reconciliation_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("occurrence_key", sa.String(80), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliation_items"),
        sa.ForeignKeyConstraint(
            ["reconciliation_id"],
            ["reconciliations.id"],
            name="fk_reconciliation_items_reconciliation_id_reconciliations",
        ),
    )
    op.create_index(
        "ix_reconciliation_items_reconciliation_id_id",
        "reconciliation_items",
        ["reconciliation_id", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_items_reconciliation_id_id", "reconciliation_items")
    op.drop_table("reconciliation_items")
    op.drop_index("ix_reconciliations_created_at", "reconciliations")
    op.drop_table("reconciliations")
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("payment_id", existing_type=sa.Integer(), nullable=False)
