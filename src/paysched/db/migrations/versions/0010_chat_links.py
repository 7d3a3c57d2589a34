"""Chats linked to accounts, and the one-time tokens that link them.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from paysched.db.tables import CHAT_CHANNELS, UTCDateTime, _one_of

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("chat_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chat_links"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_chat_links_account_id_accounts"
        ),
        sa.UniqueConstraint(
            "account_id", "channel", "chat_id", name="uq_chat_links_account_id_channel_chat_id"
        ),
        sa.CheckConstraint(_one_of("channel", CHAT_CHANNELS), name="ck_chat_links_channel_valid"),
    )
    op.create_index("ix_chat_links_channel_chat_id", "chat_links", ["channel", "chat_id"])
    op.create_table(
        "link_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("used_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_link_tokens"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_link_tokens_account_id_accounts"
        ),
        sa.UniqueConstraint("token_hash", name="uq_link_tokens_token_hash"),
        sa.CheckConstraint(_one_of("channel", CHAT_CHANNELS), name="ck_link_tokens_channel_valid"),
    )


def downgrade() -> None:
    op.drop_table("link_tokens")
    op.drop_index("ix_chat_links_channel_chat_id", "chat_links")
    op.drop_table("chat_links")
