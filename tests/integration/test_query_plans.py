"""The store's per-payment and per-state queries read by index, not through history.

One PostgreSQL database of this module's own, filled with SQL (generate_series) with a history
of finished occurrences and notifications and ANALYZEd, as autovacuum would after such a load;
each query is run through the store, captured as it was sent, and its EXPLAIN ANALYZE must show
no sequential scan of a grown table and no node that reads past more than a page of rows.
The planner chooses freely: no enable_* setting is changed.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from paysched.bot.reminders import reminder_outbox
from paysched.db.actions import ActionFilter, find_actions
from paysched.db.outbox import Outbox
from paysched.db.store import Store
from paysched.db.store.finds import STRETCH, PaymentFilter
from paysched.domain import OccurrenceState
from tests.conftest import PG_ADMIN, _pg_admin

PAYMENTS = 100_000
OCCURRENCES = 1_000_000  # finished: the history that grows forever
NOTIFICATIONS = 200_000
GROWN = ("payments", "occurrences", "notifications", "actions")
ACTIONS = 200_000  # the audit log: mostly the CLI's, a few of one key's and deposits long ago
# A query may look at a page of rows it then drops, not at a share of the history.
MAX_FILTERED = 1_000

# Every 10th payment active, every 1,000th paused, the rest one-time payments that are done.
_FILL = [
    """INSERT INTO accounts (name, currency, kind, balance, created_at)
       VALUES ('payer', 'USD', 'user', 0, now()), ('payee', 'USD', 'user', 0, now())""",
    """INSERT INTO payments (payer_id, payee_id, amount, currency, state, due_at, created_at,
                             updated_at)
       SELECT 1, 2, 1, 'USD',
              CASE WHEN g % 1000 = 0 THEN 'paused' WHEN g % 10 = 0 THEN 'active' ELSE 'done' END,
              now() - interval '30 day', now(), now()
       FROM generate_series(1, :payments) AS g""",
    """INSERT INTO occurrences (payment_id, due_at, key, state, attempts, fence, started_at,
                                finished_at, created_at, updated_at)
       SELECT 1 + g % :payments, now() - interval '30 day' + g * interval '1 second',
              'hist-' || g, 'succeeded', 1, 1, now(), now(), now(), now()
       FROM generate_series(1, :occurrences) AS g""",
    """INSERT INTO notifications (dedup_key, payment_id, event, channel, target, payload, state,
                                  attempts, next_attempt_at, created_at, sent_at)
       SELECT 'hist-' || g, 1 + g % :payments, 'succeeded', 'log', 'log', '{}',
              CASE WHEN g % 1000 = 0 THEN 'dead' ELSE 'sent' END, 1, now(), now(), now()
       FROM generate_series(1, :notifications) AS g""",
    # Due now and waiting: one of an active payment (10), one of a paused payment (1000).
    """INSERT INTO occurrences (payment_id, due_at, key, state, created_at, updated_at)
       VALUES (10, now() - interval '1 minute', 'due-10', 'scheduled', now(), now()),
              (1000, now() - interval '1 minute', 'due-1000', 'scheduled', now(), now())""",
    """INSERT INTO api_keys (name, scope, prefix, key_hash, created_at)
       VALUES ('ops', 'admin', 'psk_plan', repeat('0', 64), now())""",
    """INSERT INTO actions (at, actor_kind, api_key_id, actor_name, via, action, payment_id)
       SELECT now() - interval '30 day' + g * interval '1 second',
              CASE WHEN g <= 5 THEN 'api_key' ELSE 'cli' END,
              CASE WHEN g <= 5 THEN 1 END, 'ops', 'api',
              CASE WHEN g % 50000 = 7 THEN 'deposit' ELSE 'pause' END, 1 + g % :payments
       FROM generate_series(1, :actions) AS g""",
]


@pytest.fixture(scope="module")
def grown() -> Iterator[Store]:
    name = f"paysched_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    store = Store.connect(f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}")
    try:
        store.migrate()
        sizes = {
            "payments": PAYMENTS,
            "occurrences": OCCURRENCES,
            "notifications": NOTIFICATIONS,
            "actions": ACTIONS,
        }
        with store.engine.begin() as conn:
            for statement in _FILL:
                conn.execute(text(statement), sizes)
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
        yield store
    finally:
        store.close()
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def reads_of(
    store: Store, run: Callable[[], object], max_filtered: int = MAX_FILTERED
) -> list[tuple[str, list[str]]]:
    """Each SELECT that `run` sent, with what its plan does wrong (empty: nothing)."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    assert sent, "no query captured"
    out = []
    with store.engine.connect() as conn:
        for statement, parameters in sent:
            explained = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
            ).scalar_one()
            wrong = [
                f"{node['Node Type']} on {node.get('Relation Name')}, "
                f"{node.get('Rows Removed by Filter', 0)} rows filtered out"
                for node in _nodes(explained[0]["Plan"])
                if (node["Node Type"] == "Seq Scan" and node.get("Relation Name") in GROWN)
                or node.get("Rows Removed by Filter", 0) > max_filtered
            ]
            out.append((statement, wrong))
        conn.rollback()  # SELECT ... FOR UPDATE locked rows
    return out


def assert_indexed(store: Store, run: Callable[[], object]) -> None:
    bad = [(statement, wrong) for statement, wrong in reads_of(store, run) if wrong]
    assert bad == []


def database_now(store: Store) -> datetime:
    """The fill's clock (its rows are stamped with the server's now()), read when a test runs:
    a time taken at import was minutes old by the time a long suite got here."""
    with store.engine.connect() as conn:
        now: datetime = conn.execute(text("SELECT now()")).scalar_one()
    return now.astimezone(UTC)


def test_reconcile_finds_pending_occurrences_by_index(grown: Store) -> None:
    """The tick's reconcile: paused payments are found through the payment's key, not by
    reading every payment (a sequential scan that grew with the schedule)."""
    horizon = database_now(grown) + timedelta(minutes=5)
    pending = grown.reads.pending_occurrences(horizon)
    assert [o.key for o in pending] == ["due-10"]  # the paused payment's waits for its resume
    assert_indexed(grown, lambda: grown.reads.pending_occurrences(horizon))


def test_per_payment_and_per_state_queries_read_by_index(grown: Store) -> None:
    """A payment's detail, lists and controls read its own rows, and lists by state only that
    state's, however many occurrences and notifications other payments have finished."""
    outbox = Outbox(grown.engine)
    now = database_now(grown)
    pid = 20  # active, with ten finished occurrences and two notifications in the history

    def per_payment() -> None:
        grown.payments.get_payment(pid)
        grown.reads.occurrences_of(pid)
        grown.reads.occurrence_states([pid, pid + 10])
        grown.reads.needing_attention([pid, pid + 10], now)
        grown.reads.list_occurrences(50, payment_id=pid)
        outbox.list(payment_id=pid, limit=50)
        grown.control.pause(pid, now)
        grown.control.resume(pid, now)
        grown.control.cancel_payment(pid + 10, now, "test")  # resume left 20 done: nothing more due

    def per_state() -> None:
        grown.payments.list_payments(50, state="paused")
        grown.reads.list_occurrences(50, state=OccurrenceState.SCHEDULED)
        grown.reads.recent_activity(now - timedelta(hours=1))  # the dashboard's chart
        outbox.list(state="dead", limit=50)

    assert len(grown.reads.occurrences_of(pid)) == OCCURRENCES // PAYMENTS
    assert_indexed(grown, per_payment)
    assert_indexed(grown, per_state)


def test_the_reminder_sweep_reads_only_the_reminding_payments(grown: Store) -> None:
    """The tick's reminder sweep, every tick: through the partial index of the payments that
    remind, never through every payment."""
    now = database_now(grown)
    # Every active payment due tomorrow, none of them reminding; put back afterwards.
    due = "UPDATE payments SET next_due_at = {} WHERE state = 'active'"
    try:
        _set(grown, due.format("now() + interval '1 day'"))
        assert grown.reminders.remind_due(now, reminder_outbox) == 0
        assert_indexed(grown, lambda: grown.reminders.remind_due(now, reminder_outbox))
    finally:
        _set(grown, due.format("NULL"))


def _set(store: Store, statement: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement))
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE payments"))


PAGES = ((None, None), (PAYMENTS // 2, None), (None, PAYMENTS // 2))  # first, older, newer


def _searches(now: datetime) -> list[PaymentFilter]:
    return [
        PaymentFilter(payment_id=500),
        PaymentFilter(text="hist-5000"),  # an occurrence key
        PaymentFilter(text="payer"),  # an account, either side
        PaymentFilter(text="nothing matches this"),  # no key, reference, account: memo
        PaymentFilter(account="payee", state="done"),
        PaymentFilter(currency="USD"),
        PaymentFilter(currency="EUR"),  # none: found by the index, not by reading all
        PaymentFilter(state="paused"),
        PaymentFilter(payer="payer", payee="payee"),
        PaymentFilter(status="failed"),
        PaymentFilter(status="pending"),
        PaymentFilter(status="scheduled"),
        PaymentFilter(occurrence="scheduled"),
        PaymentFilter(occurrence="succeeded"),
        PaymentFilter(due_from=now - timedelta(days=29), due_before=now - timedelta(days=28)),
    ]


def test_finding_payments_reads_by_index_on_sqlite(tmp_path: Path) -> None:
    """SQLite's plans for the same reads (it keeps no statistics: the plan is the schema's):
    no table of the history is scanned whole."""
    store = Store.connect(f"sqlite:///{tmp_path / 'plans.db'}")
    try:
        store.migrate()
        sent: list[tuple[str, Any]] = []

        def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                sent.append((statement, parameters))

        event.listen(store.engine, "before_cursor_execute", capture)
        for f in _searches(datetime.now(UTC)):
            for before, after in PAGES:
                store.finds.find_payments(f, 26, before, after)
        store.finds.ledger_entries("payer", 26, 10)
        event.remove(store.engine, "before_cursor_execute", capture)
        with store.engine.connect() as conn:
            for statement, parameters in sent:
                plan = [
                    row[3]
                    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                ]
                tables = (*GROWN, "ledger_entries")
                scans = [s for s in plan if s.startswith("SCAN") and s.split()[1] in tables]
                # A one-sided range of the primary key walks every payment below (or above) it
                # with the filter: what an index should have answered. (A stretch is a
                # two-sided range: rowid>? AND rowid<?.)
                scans += [
                    s
                    for s in plan
                    if re.match(
                        r"SEARCH payments USING INTEGER PRIMARY "
                        r"KEY \(rowid[<>]\?\)",
                        s,
                    )
                ]
                assert scans == [], (statement, plan)
    finally:
        store.close()


def test_finding_payments_reads_by_index(grown: Store) -> None:
    """The dashboard's list and GET /v1/payments (issue 22): every search kind and filter reads
    a page by index. A filter no index answers (memo text, status, a final occurrence state, a
    due range) reads one stretch of payment ids, never more: at most STRETCH rows filtered."""
    searches = _searches(database_now(grown))
    for f in searches:
        for before, after in PAGES:
            read = functools.partial(grown.finds.find_payments, f, 26, before, after)
            bad = [(sql, wrong) for sql, wrong in reads_of(grown, read, STRETCH) if wrong]
            assert bad == [], (f, before, after)
    assert_indexed(grown, lambda: grown.finds.ledger_entries("payer", 26))
    assert_indexed(grown, lambda: grown.finds.ledger_entries("payer", 26, 10))


def test_the_audit_log_finds_one_keys_or_one_kinds_actions_by_index(grown: Store) -> None:
    """GET /v1/actions?actor=3 and ?action=deposit: what one key did, or the few deposits,
    read by their indexes, not back through every other action."""
    engine = grown.engine
    by_key = functools.partial(find_actions, engine, ActionFilter(api_key_id=1), 26)
    assert len(by_key()) == 5
    assert_indexed(grown, by_key)
    deposits = functools.partial(find_actions, engine, ActionFilter(action="deposit"), 26)
    assert len(deposits()) == 4
    assert_indexed(grown, deposits)
