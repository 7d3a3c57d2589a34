"""Table definitions. Alembic migrations in migrations/versions must produce exactly this schema
(tests/integration/test_migrations.py compares them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from paysched.domain import CATCHUP_POLICIES


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every engine.

    PostgreSQL stores timestamptz; SQLite has no time zones, so values are stored as naive UTC and
    re-tagged on the way out. Naive input is refused: its meaning would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# The states as the database knows them: CHECK constraints keep a bug or a hand-written UPDATE
# from storing a state the code cannot read.
OCCURRENCE_STATES = (
    "scheduled",
    "queued",
    "executing",
    "retrying",
    "unknown",
    "needs_review",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
    "missed",
    "awaiting_approval",
)
PAYMENT_STATES = ("active", "paused", "done", "cancelled")
# Whether a payment's occurrences wait for a person's approval before they may be claimed, and
# what becomes of one nobody approved or rejected within the payment's approval timeout.
APPROVAL_POLICIES = ("none", "required")
APPROVAL_TIMEOUT_OUTCOMES = ("skip", "fail")
NOTIFICATION_STATES = ("pending", "sent", "dead")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# One row per database: the deployment id that marks the queue jobs this database created.
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("currency", String(3), nullable=False),
    # "user" accounts belong to people; one "external" account per currency is the other side of
    # deposits, so that every ledger movement has two entries summing to zero.
    Column("kind", String(10), nullable=False, server_default="user"),
    Column("balance", BigInteger, nullable=False, server_default="0"),  # minor units
    Column("created_at", UTCDateTime, nullable=False),
    # Defaults for the payments this account pays, copied into each at its creation: how long
    # before each occurrence its linked chats are reminded (seconds), and the amount (minor
    # units) above which a payment requires approval.
    Column("remind_s", Integer, nullable=True),
    Column("approval_above", BigInteger, nullable=True),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("payer_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("payee_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),  # minor units, > 0
    Column("currency", String(3), nullable=False),
    Column("state", String(16), nullable=False),
    Column("due_at", UTCDateTime, nullable=True),  # one-time payments
    Column("cron", String(120), nullable=True),  # recurring payments
    Column("timezone", String(64), nullable=True),
    # Recurring by calendar rule instead of cron: paysched.recurrence.Recurrence as JSON.
    Column("recurrence", Text, nullable=True),
    # What runs of the occurrences that fell due while paysched was down or the payment paused.
    Column("catchup", String(8), nullable=False, server_default="all"),
    Column("catchup_window_s", Integer, nullable=True),  # older than this: missed, always
    # The nominal (rule) instant of next_due_at: next_due_at itself may be moved off a
    # holiday; the nominal one names the occurrence and continues the series.
    Column("next_nominal_at", UTCDateTime, nullable=True),
    # The next occurrence not yet created; NULL once none remain, which keeps the index that the
    # scheduler's tick walks as small as the set of payments that still have work.
    Column("next_due_at", UTCDateTime, nullable=True),
    Column("memo", Text, nullable=False, server_default=""),
    # Notification targets, JSON list of "telegram:CHAT", "webhook:URL" or "log".
    Column("notify", Text, nullable=False, server_default="[]"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Reminders: the payer's linked chats hear of each occurrence this long before it falls
    # due (with Skip / Pause buttons); reminded_due_at is the due time of the occurrence the
    # last reminder was written for, so that each occurrence is reminded once.
    Column("remind_s", Integer, nullable=True),
    Column("reminded_due_at", UTCDateTime, nullable=True),
    # Approvals: each occurrence waits in awaiting_approval until a person other than its
    # creator approves it; after approval_timeout_s unanswered it is skipped or failed.
    Column("approval", String(8), nullable=False, server_default="none"),
    Column("approval_timeout_s", Integer, nullable=True),
    Column("approval_on_timeout", String(8), nullable=True),
    Index(None, "next_due_at"),
    # The reminder sweep reads only the payments that remind.
    Index(
        "ix_payments_next_due_at_reminding",
        "next_due_at",
        postgresql_where=text("remind_s IS NOT NULL"),
        sqlite_where=text("remind_s IS NOT NULL"),
    ),
    Index(None, "state", "id"),  # lists by state, newest first; the paused ones for reconcile
    # An account's payments (as payer, as payee) and a currency's, newest first: the
    # dashboard's and GET /v1/payments' filters read one page of them (db/store/finds.py).
    Index(None, "payer_id", "id"),
    Index(None, "payee_id", "id"),
    Index(None, "currency", "id"),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("payer_id <> payee_id", name="distinct_accounts"),
    CheckConstraint(_one_of("state", PAYMENT_STATES), name="state_valid"),
    CheckConstraint(_one_of("catchup", CATCHUP_POLICIES), name="catchup_valid"),
    CheckConstraint(_one_of("approval", APPROVAL_POLICIES), name="approval_valid"),
    CheckConstraint(
        _one_of("approval_on_timeout", APPROVAL_TIMEOUT_OUTCOMES), name="on_timeout_valid"
    ),
    CheckConstraint("remind_s > 0 AND approval_timeout_s > 0", name="durations_positive"),
)

occurrences = Table(
    "occurrences",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("payment_id", Integer, ForeignKey("payments.id"), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("key", String(80), nullable=False, unique=True),
    Column("state", String(24), nullable=False),  # 16 until 0012: awaiting_approval is 17
    Column("attempts", Integer, nullable=False, server_default="0"),
    # Incremented by every claim; only the holder of the current fence may settle.
    Column("fence", Integer, nullable=False, server_default="0"),
    Column("reason", Text, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),  # first claim: lateness = started - due
    Column("finished_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Claims that took over from a worker that died or stalled (not business attempts).
    Column("takeovers", Integer, nullable=False, server_default="0"),
    Column("reference", Text, nullable=True),  # the provider's id for the payment
    # unknown: when the resolver next asks the provider, and how many times it has asked.
    Column("resolve_at", UTCDateTime, nullable=True),
    Column("resolve_checks", Integer, nullable=False, server_default="0"),
    # The rule's own instant when a business-day rule moved due_at off it (else NULL): the key
    # is made from it, so two nominal dates moved onto one day stay two occurrences.
    Column("nominal_at", UTCDateTime, nullable=True),
    # awaiting_approval: when it is skipped or failed unanswered (NULL: it waits until a
    # person decides).
    Column("approval_deadline", UTCDateTime, nullable=True),
    Index(None, "state", "due_at"),
    # A payment's occurrences (its detail and pages, pause, resume, cancel), not all history.
    Index(None, "payment_id", "due_at"),
    # A search by the provider's reference; only the occurrences that have one.
    Index(
        None,
        "reference",
        postgresql_where=text("reference IS NOT NULL"),
        sqlite_where=text("reference IS NOT NULL"),
    ),
    CheckConstraint(_one_of("state", OCCURRENCE_STATES), name="state_valid"),
    CheckConstraint("attempts >= 0 AND fence >= 0 AND takeovers >= 0", name="counts_valid"),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("occurrence_id", Integer, ForeignKey("occurrences.id"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("from_state", String(24), nullable=True),
    Column("to_state", String(24), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("reason", Text, nullable=True),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("transfer_id", String(80), nullable=False, index=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),  # signed minor units; a transfer sums to zero
    Column("occurrence_id", Integer, ForeignKey("occurrences.id"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # The last line of defence for "exactly once": one occurrence can touch an account once.
    UniqueConstraint("occurrence_id", "account_id"),
    # An account's entries, newest first (its page in the dashboard): (account_id) alone made
    # PostgreSQL sort all of a busy account's entries for one page.
    Index(None, "account_id", "id"),
    CheckConstraint("amount <> 0", name="amount_nonzero"),
)

# The outbox: one row per event and target, written in the same transaction as the state change
# that causes it, delivered afterwards by notify.delivery.
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dedup_key", String(200), nullable=False, unique=True),
    # NULL for an event of no one payment (a reconciliation that found discrepancies).
    Column("payment_id", Integer, ForeignKey("payments.id"), nullable=True),
    Column("occurrence_id", Integer, ForeignKey("occurrences.id"), nullable=True),
    Column("event", String(16), nullable=False),  # succeeded | failed | retrying | reconciliation
    Column("channel", String(16), nullable=False),  # telegram | webhook | log
    Column("target", Text, nullable=False),
    Column("payload", Text, nullable=False),  # JSON: text for people + structured event
    Column("state", String(8), nullable=False),  # pending | sent | dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Index(None, "state", "next_attempt_at"),
    Index(None, "payment_id", "id"),  # a payment's notifications, newest first
    CheckConstraint(_one_of("state", NOTIFICATION_STATES), name="state_valid"),
)

# API keys of the HTTP API. Only a SHA-256 of the key is kept: keys are 256-bit random, so a
# slow password hash would add nothing but latency to every request.
# Scopes nest in this order: each can do what the ones before it can. `approve` may decide
# on occurrences awaiting approval (never those of payments it created itself).
API_SCOPES = ("read", "write", "approve", "admin")
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("scope", String(8), nullable=False),
    # The key's public part (shown in listings, used to find the row); the rest is secret.
    Column("prefix", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    CheckConstraint(_one_of("scope", API_SCOPES), name="scope_valid"),
)

# Idempotency keys of POST requests: the response is written in the same transaction as the
# change it reports, so a replay can never repeat the change nor miss its answer.
IDEMPOTENCY_STATES = ("in_flight", "done")
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("key", String(255), nullable=False),
    # SHA-256 of method, path and canonical body: the same key with another request is refused.
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(10), nullable=False),
    # The request holding an in-flight key; another may take it over once locked_until passes
    # (its process died before the change committed, so nothing of it was written).
    Column("owner", String(32), nullable=False),
    Column("locked_until", UTCDateTime, nullable=False),
    Column("status", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("api_key_id", "key"),
    Index(None, "created_at"),
    CheckConstraint(_one_of("state", IDEMPOTENCY_STATES), name="state_valid"),
)

# Who did what: one row per action a person took (over the HTTP API, the dashboard, the CLI or
# the Python API), written in the same transaction as the change it records, so that there is
# no change without its actor and no actor without its change.
ACTOR_KINDS = ("api_key", "cli", "python", "chat")
actions = Table(
    "actions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor_kind", String(8), nullable=False),
    # The API key that acted (api_key); its name is copied, so a renamed or revoked key's past
    # actions still say who it was.
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("actor_name", String(100), nullable=False),
    Column("via", String(16), nullable=False),  # api | dashboard | cli | python
    Column("action", String(32), nullable=False),  # create, cancel, pause, resolve, ...
    Column("payment_id", Integer, ForeignKey("payments.id"), nullable=True),
    Column("occurrence_id", Integer, ForeignKey("occurrences.id"), nullable=True),
    Column("detail", Text, nullable=False, server_default=""),
    Index(None, "payment_id", "id"),  # a payment's actions, newest first (its timeline)
    # The audit log's filters (GET /v1/actions): what one key did, one kind of action, newest
    # first, without reading back through every other action.
    Index(None, "api_key_id", "id"),
    Index(None, "action", "id"),
    CheckConstraint(_one_of("actor_kind", ACTOR_KINDS), name="actor_kind_valid"),
)

# Dashboard sign-ins: the browser holds a random session id, the database its SHA-256 and the
# key it stands for. The key itself never reaches the cookie; a session ends at sign-out, after
# being idle too long, at its absolute expiry, or when its key is revoked.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),  # idle expiry counts from here
    Column("expires_at", UTCDateTime, nullable=False),  # absolute expiry
    Index(None, "expires_at"),  # the purge of ended sessions
)

# Reconciliations: paysched's occurrences, the provider's charges and paysched's ledger compared
# over a period (paysched reconcile, POST /v1/reconciliations, PAYSCHED_RECONCILE_CRON). The
# report's discrepancies are rows of reconciliation_items, written page by page as they are
# found, so that a period of a million occurrences needs constant memory.
RECONCILIATION_STATES = ("running", "done", "failed")
reconciliations = Table(
    "reconciliations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("period_from", UTCDateTime, nullable=False),
    Column("period_to", UTCDateTime, nullable=False),
    Column("state", String(8), nullable=False),
    Column("trigger", String(16), nullable=False),  # cli | api | schedule
    Column("actor_name", String(100), nullable=True),  # who asked (NULL: the schedule)
    # One scheduled run per period however many `paysched run` processes share the database.
    Column("dedup_key", String(120), nullable=True, unique=True),
    # Whether the provider could list its charges (an adapter may not): a report without the
    # listing checked only what lookups could, and says so.
    Column("provider_listed", Boolean, nullable=True),
    Column("counts", Text, nullable=False, server_default="{}"),  # JSON: kind -> number
    Column("error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index(None, "created_at"),
    CheckConstraint(_one_of("state", RECONCILIATION_STATES), name="state_valid"),
)

reconciliation_items = Table(
    "reconciliation_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reconciliation_id", Integer, ForeignKey("reconciliations.id"), nullable=False),
    Column("kind", String(32), nullable=False),  # not_succeeded_here, not_charged, mismatch, ...
    Column("occurrence_key", String(80), nullable=True),
    Column("reference", Text, nullable=True),  # the provider's id, when it has one
    Column("detail", Text, nullable=False),  # JSON: amounts, currencies, states as found
    Index(None, "reconciliation_id", "id"),
)

# Chats linked to accounts (the bot): only a linked chat may see or act on an account's
# payments. A link is made by a one-time token the account's owner opens in the chat
# (https://t.me/BOT?start=TOKEN): only its SHA-256 is kept, it expires and is used once.
CHAT_CHANNELS = ("telegram",)
CHAT_ROLES = ("holder", "approver")
chat_links = Table(
    "chat_links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("chat_id", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # holder: sees the account's payments, is reminded, may skip and pause; approver: also
    # approves or rejects its payments' occurrences.
    Column("role", String(8), nullable=False, server_default="holder"),
    UniqueConstraint("account_id", "channel", "chat_id"),
    Index(None, "channel", "chat_id"),  # a message's chat: which accounts it speaks for
    CheckConstraint(_one_of("channel", CHAT_CHANNELS), name="channel_valid"),
    CheckConstraint(_one_of("role", CHAT_ROLES), name="role_valid"),
)

link_tokens = Table(
    "link_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),  # single use: set by the link it made
    Column("used_by", String(64), nullable=True),  # the chat that used it
    Column("role", String(8), nullable=False, server_default="holder"),  # what the link grants
    CheckConstraint(_one_of("channel", CHAT_CHANNELS), name="channel_valid"),
    CheckConstraint(_one_of("role", CHAT_ROLES), name="role_valid"),
)
