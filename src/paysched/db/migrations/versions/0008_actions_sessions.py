"""Who did what (actions: one row per action of a person, with its API key or "cli") and
dashboard sessions (a random id's hash mapped to the key it signed in with, with idle and
absolute expiry).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from paysched.db.tables import ACTOR_KINDS, UTCDateTime, _one_of

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(8), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(100), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("occurrence_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name="fk_actions_api_key_id_api_keys"
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name="fk_actions_payment_id_payments"
        ),
        sa.ForeignKeyConstraint(
            ["occurrence_id"], ["occurrences.id"], name="fk_actions_occurrence_id_occurrences"
        ),
        sa.CheckConstraint(_one_of("actor_kind", ACTOR_KINDS), name="ck_actions_actor_kind_valid"),
    )
    op.create_index("ix_actions_payment_id_id", "actions", ["payment_id", "id"])
    op.create_index("ix_actions_api_key_id_id", "actions", ["api_key_id", "id"])
    op.create_index("ix_actions_action_id", "actions", ["action", "id"])
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dashboard_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_dashboard_sessions_token_hash"),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name="fk_dashboard_sessions_api_key_id_api_keys"
        ),
    )
    op.create_index("ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_sessions_expires_at", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    for name in ("ix_actions_action_id", "ix_actions_api_key_id_id", "ix_actions_payment_id_id"):
        op.drop_index(name, table_name="actions")
    op.drop_table("actions")
