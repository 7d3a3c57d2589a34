"""Rows for the export and statement tests, written straight into the tables with chosen
times (the boundaries of a period are the point), in three currencies of three exponents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from paysched.db import tables as t


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


SECRET = "T0K3N-abcdef0123456789"
JAN, FEB = at("2027-01-01T00:00:00"), at("2027-02-01T00:00:00")
# Occurrences of payment 1 due in January (ids 1..7), and two just outside it.
JAN_OCCURRENCES = [JAN + timedelta(days=i) for i in range(6)] + [FEB - timedelta(microseconds=1)]


def seed(engine: Engine) -> dict[str, Any]:
    """Accounts, payments, occurrences and ledger entries around January 2027; returns what
    the tests expect of them."""
    made = at("2026-12-01T00:00:00")
    accounts = [
        ("alice", "EUR"),
        ("bob", "EUR"),
        ("taro", "JPY"),
        ("hanako", "JPY"),
        ("kw1", "KWD"),
        ("kw2", "KWD"),
    ]
    payments = [
        # id 1: created a microsecond before January: outside the period.
        (1, 2, 1234, "EUR", at("2026-12-31T23:59:59.999999")),
        (3, 4, 100, "JPY", JAN),  # id 2: at the period's first instant: inside
        (5, 6, 1005, "KWD", FEB - timedelta(microseconds=1)),  # id 3: inside
        (1, 2, 1, "EUR", FEB),  # id 4: at its end: outside
    ]
    notify = json.dumps([f"webhook:https://hooks.example/{SECRET}", "telegram:12345"])
    with engine.begin() as conn:
        conn.execute(
            insert(t.accounts),
            [dict(name=n, currency=c, kind="user", balance=0, created_at=made) for n, c in accounts]
            + [
                dict(
                    name="@external:EUR",
                    currency="EUR",
                    kind="external",
                    balance=0,
                    created_at=made,
                )
            ],
        )
        conn.execute(
            insert(t.payments),
            [
                dict(
                    payer_id=a,
                    payee_id=b,
                    amount=amount,
                    currency=cur,
                    state="done",
                    due_at=when,
                    memo=f'memo, with "quotes" {i}',
                    notify=notify,
                    created_at=when,
                    updated_at=when,
                )
                for i, (a, b, amount, cur, when) in enumerate(payments, 1)
            ],
        )
        due = [*JAN_OCCURRENCES, JAN - timedelta(microseconds=1), FEB]
        conn.execute(
            insert(t.occurrences),
            [
                dict(
                    payment_id=1,
                    due_at=d,
                    key=f"pay-1-{i}",
                    state="failed",
                    attempts=1,
                    reason=f"provider said: Authorization: Bearer {SECRET}",
                    created_at=made,
                    updated_at=made,
                    started_at=d,
                    finished_at=d,
                )
                for i, d in enumerate(due, 1)
            ],
        )
        # The ledger of alice (id 1) and bob (2): a deposit in December, payments on the first
        # instant of January, its last and February's first.
        moves = [
            ("deposit-1", 7, 1, 10_000, None, at("2026-12-15T12:00:00")),
            ("pay-1-1", 1, 2, 1234, 1, JAN),
            ("pay-1-7", 1, 2, 1000, 7, FEB - timedelta(microseconds=1)),
            ("pay-1-9", 1, 2, 500, 9, FEB),
        ]
        conn.execute(
            insert(t.ledger_entries),
            [
                row
                for tid, debit, credit, amount, occ, when in moves
                for row in (
                    dict(
                        transfer_id=tid,
                        account_id=debit,
                        amount=-amount,
                        occurrence_id=occ,
                        created_at=when,
                    ),
                    dict(
                        transfer_id=tid,
                        account_id=credit,
                        amount=amount,
                        occurrence_id=occ,
                        created_at=when,
                    ),
                )
            ],
        )
    return {
        "payments": [2, 3],
        "occurrences": [1, 2, 3, 4, 5, 6, 7],
        "ledger": [3, 4, 5, 6],  # the two January transfers, two entries each
    }
