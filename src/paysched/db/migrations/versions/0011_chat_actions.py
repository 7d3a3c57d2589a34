"""Acting from the chat: reminders, approvals, chat roles, and chats and approvers as actors.

Payments get `remind_s` / `reminded_due_at` (reminders with Skip / Pause buttons) and
`approval` / `approval_timeout_s` / `approval_on_timeout`; accounts get the defaults
`remind_s` and `approval_above`; occurrences get the state `awaiting_approval` and
`approval_deadline`; chat links and link tokens get a `role` (holder | approver); actions may
be a chat's (actor kind `chat`), and API keys may have the scope `approve`.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.sql.elements import conv

from paysched.db.tables import (
    ACTOR_KINDS,
    API_SCOPES,
    APPROVAL_POLICIES,
    APPROVAL_TIMEOUT_OUTCOMES,
    CHAT_ROLES,
    OCCURRENCE_STATES,
    UTCDateTime,
    _one_of,
)

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_OCCURRENCE_STATES = tuple(s for s in OCCURRENCE_STATES if s != "awaiting_approval")
OLD_ACTOR_KINDS = tuple(k for k in ACTOR_KINDS if k != "chat")
OLD_API_SCOPES = tuple(s for s in API_SCOPES if s != "approve")
REMINDING = sa.text("remind_s IS NOT NULL")
# 0004 and 0008 named these constraints in full inside create_table, and the naming convention
# prefixed them again: that doubled name is the one to drop. Recreated under the convention.
OLD_ACTOR_CHECK = conv("ck_actions_ck_actions_actor_kind_valid")
OLD_SCOPE_CHECK = conv("ck_api_keys_ck_api_keys_scope_valid")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA defer_foreign_keys = ON")  # see 0003
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("remind_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("approval_above", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("remind_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reminded_due_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("approval", sa.String(8), nullable=False, server_default="none"))
        batch.add_column(sa.Column("approval_timeout_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("approval_on_timeout", sa.String(8), nullable=True))
        batch.create_check_constraint("approval_valid", _one_of("approval", APPROVAL_POLICIES))
        batch.create_check_constraint(
            "on_timeout_valid", _one_of("approval_on_timeout", APPROVAL_TIMEOUT_OUTCOMES)
        )
        batch.create_check_constraint(
            "durations_positive", "remind_s > 0 AND approval_timeout_s > 0"
        )
    op.create_index(
        "ix_payments_next_due_at_reminding",
        "payments",
        ["next_due_at"],
        postgresql_where=REMINDING,
        sqlite_where=REMINDING,
    )
    with op.batch_alter_table("occurrences") as batch:
        batch.add_column(sa.Column("approval_deadline", UTCDateTime(), nullable=True))
        batch.drop_constraint("state_valid", type_="check")
        batch.create_check_constraint("state_valid", _one_of("state", OCCURRENCE_STATES))
    for table in ("chat_links", "link_tokens"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("role", sa.String(8), nullable=False, server_default="holder")
            )
            batch.create_check_constraint("role_valid", _one_of("role", CHAT_ROLES))
    with op.batch_alter_table("actions") as batch:
        batch.drop_constraint(OLD_ACTOR_CHECK, type_="check")
        batch.create_check_constraint("actor_kind_valid", _one_of("actor_kind", ACTOR_KINDS))
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(OLD_SCOPE_CHECK, type_="check")
        batch.create_check_constraint("scope_valid", _one_of("scope", API_SCOPES))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("scope_valid", type_="check")
        batch.create_check_constraint("scope_valid", _one_of("scope", OLD_API_SCOPES))
    with op.batch_alter_table("actions") as batch:
        batch.drop_constraint("actor_kind_valid", type_="check")
        batch.create_check_constraint("actor_kind_valid", _one_of("actor_kind", OLD_ACTOR_KINDS))
    for table in ("link_tokens", "chat_links"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint("role_valid", type_="check")
            batch.drop_column("role")
    with op.batch_alter_table("occurrences") as batch:
        batch.drop_constraint("state_valid", type_="check")
        batch.create_check_constraint("state_valid", _one_of("state", OLD_OCCURRENCE_STATES))
        batch.drop_column("approval_deadline")
    op.drop_index("ix_payments_next_due_at_reminding", "payments")
    with op.batch_alter_table("payments") as batch:
        for constraint in ("durations_positive", "on_timeout_valid", "approval_valid"):
            batch.drop_constraint(constraint, type_="check")
        for column in (
            "approval_on_timeout",
            "approval_timeout_s",
            "approval",
            "reminded_due_at",
            "remind_s",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("approval_above")
        batch.drop_column("remind_s")
