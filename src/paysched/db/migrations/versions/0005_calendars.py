"""Calendar schedules: recurrence rules, catch-up policy, paused payments, missed occurrences.

Payments get `recurrence` (a rule as JSON), `catchup`, `catchup_window_s` and
`next_nominal_at`, and the state `paused`; occurrences get `nominal_at` and the state
`missed`, and lose UNIQUE(payment_id, due_at): a business-day rule may move two nominal dates
onto one day, and the occurrence key (unique, made from the nominal instant) already keeps one
occurrence per nominal date.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from paysched.db.tables import (
    OCCURRENCE_STATES,
    PAYMENT_STATES,
    UTCDateTime,
    _one_of,
)
from paysched.domain import CATCHUP_POLICIES

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_OCCURRENCE_STATES = tuple(s for s in OCCURRENCE_STATES if s != "missed")
OLD_PAYMENT_STATES = tuple(s for s in PAYMENT_STATES if s != "paused")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA defer_foreign_keys = ON")  # see 0003
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("recurrence", sa.Text(), nullable=True))
        batch.add_column(sa.Column("catchup", sa.String(8), nullable=False, server_default="all"))
        batch.add_column(sa.Column("catchup_window_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("next_nominal_at", UTCDateTime(), nullable=True))
        batch.drop_constraint("state_valid", type_="check")
        batch.create_check_constraint("state_valid", _one_of("state", PAYMENT_STATES))
        batch.create_check_constraint("catchup_valid", _one_of("catchup", CATCHUP_POLICIES))
    with op.batch_alter_table("occurrences") as batch:
        batch.add_column(sa.Column("nominal_at", UTCDateTime(), nullable=True))
        batch.drop_constraint("uq_occurrences_payment_id_due_at", type_="unique")
        batch.drop_constraint("state_valid", type_="check")
        batch.create_check_constraint("state_valid", _one_of("state", OCCURRENCE_STATES))


def downgrade() -> None:
    with op.batch_alter_table("occurrences") as batch:
        batch.drop_constraint("state_valid", type_="check")
        batch.create_check_constraint("state_valid", _one_of("state", OLD_OCCURRENCE_STATES))
        batch.create_unique_constraint("uq_occurrences_payment_id_due_at", ["payment_id", "due_at"])
        batch.drop_column("nominal_at")
    with op.batch_alter_table("payments") as batch:
        batch.drop_constraint("catchup_valid", type_="check")
        batch.drop_constraint("state_valid", type_="check")
        batch.create_check_constraint("state_valid", _one_of("state", OLD_PAYMENT_STATES))
        for column in ("next_nominal_at", "catchup_window_s", "catchup", "recurrence"):
            batch.drop_column(column)
