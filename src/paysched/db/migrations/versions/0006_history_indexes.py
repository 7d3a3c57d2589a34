"""Indexes for the per-payment and per-state queries, so that none reads the history.

Occurrences by payment (a payment's detail, its occurrence pages, list statuses, pause, resume,
cancel): the only index on occurrences.payment_id was UNIQUE(payment_id, due_at), dropped by
0005. Notifications by payment, newest first (notifications had none on payment_id; by state
the deliverer's (state, next_attempt_at) serves). Payments by state, newest first (payment
lists, and the paused payments that reconcile leaves out).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_occurrences_payment_id_due_at", "occurrences", ["payment_id", "due_at"]),
    ("ix_notifications_payment_id_id", "notifications", ["payment_id", "id"]),
    ("ix_payments_state_id", "payments", ["state", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
