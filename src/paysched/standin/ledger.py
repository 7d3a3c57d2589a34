"""The stand-in provider's own SQLite ledger: one row per idempotency key, ever.

The key is the charges table's primary key and each charge (with the balance moves it implies)
commits in one transaction, so whatever faults are injected around it, a key is charged at most
once. Amounts and balances are decimal strings (Decimal in Python, TEXT in SQLite), never
floats; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

SUCCEEDED = "succeeded"
DECLINED = "declined"
PENDING = "pending"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    key         TEXT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    amount      TEXT NOT NULL,
    currency    TEXT NOT NULL,
    "from"      TEXT NOT NULL,
    "to"        TEXT NOT NULL,
    reference   TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('succeeded', 'declined', 'pending')),
    reason      TEXT,
    created_at  TEXT NOT NULL,
    settles_at  TEXT,
    settle_to   TEXT CHECK (settle_to IN ('succeeded', 'declined')),
    fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    name    TEXT PRIMARY KEY,
    balance TEXT  -- NULL: unlimited
);
"""
_COLUMNS = (
    'key, id, amount, currency, "from", "to", reference, status, reason, created_at, '
    "settles_at, settle_to, fingerprint"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A validated POST /payments body."""

    amount: str  # a positive decimal string, as sent
    currency: str
    payer: str
    payee: str
    reference: str

    @property
    def fingerprint(self) -> str:
        """Same key + same fingerprint is a replay; same key + another one is a 422."""
        canonical = json.dumps(
            [self.amount, self.currency, self.payer, self.payee, self.reference],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Charge:
    key: str
    id: str
    amount: str
    currency: str
    payer: str
    payee: str
    reference: str
    status: str  # succeeded | declined | pending
    reason: str | None
    created_at: datetime
    settles_at: datetime | None
    settle_to: str | None
    fingerprint: str

    def body(self) -> dict[str, Any]:
        """The provider's answer for this charge (POST and GET)."""
        body: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "from": self.payer,
            "to": self.payee,
            "reference": self.reference,
            "created_at": self.created_at.isoformat(),
        }
        if self.reason is not None:
            body["reason"] = self.reason
        return body

    def position(self) -> str:
        """Where a listing continues after this charge (its cursor): created_at as stored,
        then the key, the listing's order."""
        return f"{_utc_iso(self.created_at)}|{self.key}"

    def row(self) -> dict[str, Any]:
        """Every column, JSON-ready (GET /_charges)."""
        row = asdict(self)
        row["from"] = row.pop("payer")
        row["to"] = row.pop("payee")
        for field in ("created_at", "settles_at"):
            if row[field] is not None:
                row[field] = row[field].isoformat()
        return row


class Ledger:
    """Thread-safe: one connection, used under a lock (the server handles requests in threads,
    and every statement is short)."""

    def __init__(
        self, path: str | Path | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._tmpdir: str | None = None
        if path is None or str(path) == ":memory:":
            # A real file (not :memory:) so WAL applies and the file can be inspected.
            self._tmpdir = tempfile.mkdtemp(prefix="paysched-standin-")
            path = Path(self._tmpdir) / "standin.db"
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives the process being killed (what the chaos harness does); only an
        # OS crash could lose the last commits, which a test double can afford.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- charges -----------------------------------------------------------------------------

    def get(self, key: str) -> Charge | None:
        """The charge for `key`, a due pending one settled first; None if there is none."""
        with self._tx() as conn:
            self._settle_due(conn, key)
            row = conn.execute(f"SELECT {_COLUMNS} FROM charges WHERE key = ?", (key,)).fetchone()
        return _charge(row) if row else None

    def charges(self) -> list[Charge]:
        """Every charge, due pending ones settled first, oldest first."""
        with self._tx() as conn:
            self._settle_due(conn, None)
            rows = conn.execute(f"SELECT {_COLUMNS} FROM charges ORDER BY created_at, key")
            return [_charge(r) for r in rows]

    def page(
        self,
        created_from: datetime,
        created_to: datetime,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Charge]:
        """Charges created in [created_from, created_to) after the position `after` (its
        created_at as stored, its key), oldest first, at most `limit`: the listing's pages."""
        lo, hi = _utc_iso(created_from), _utc_iso(created_to)
        sql = f"SELECT {_COLUMNS} FROM charges WHERE created_at >= ? AND created_at < ?"
        params: list[str | int] = [lo, hi]
        if after is not None:
            sql += " AND (created_at > ? OR (created_at = ? AND key > ?))"
            params += [after[0], after[0], after[1]]
        with self._tx() as conn:
            self._settle_due(conn, None)
            rows = conn.execute(f"{sql} ORDER BY created_at, key LIMIT ?", (*params, limit))
            return [_charge(r) for r in rows]

    def commit(
        self,
        key: str,
        request: ChargeRequest,
        *,
        status: str = SUCCEEDED,
        reason: str | None = None,
        settle_s: float = 0.0,
        settle_to: str = SUCCEEDED,
    ) -> tuple[Charge, bool]:
        """Record the charge for `key` in one transaction, moving balances if it (or, pending,
        its settlement) succeeds; an insufficient balance turns it into a decline.

        Returns (charge, created). If `key` already has a charge, that one is returned untouched
        with created=False: a key is never charged twice.
        """
        if status not in (SUCCEEDED, DECLINED, PENDING) or settle_to not in (SUCCEEDED, DECLINED):
            raise ValueError(f"bad status {status!r} / settle_to {settle_to!r}")
        now = self._clock()
        with self._tx() as conn:
            existing = conn.execute(
                f"SELECT {_COLUMNS} FROM charges WHERE key = ?", (key,)
            ).fetchone()
            if existing:
                return _charge(existing), False
            settles_at: datetime | None = None
            settles_to: str | None = None
            if status == PENDING:
                settles_at, settles_to = now + timedelta(seconds=settle_s), settle_to
            # A pending charge that will succeed holds the money now, as card authorisations do.
            if status == SUCCEEDED or settles_to == SUCCEEDED:
                shortfall = self._move(conn, request)
                if shortfall:
                    status, reason, settles_at, settles_to = DECLINED, shortfall, None, None
            charge = Charge(
                key=key,
                id=f"ch_{uuid.uuid4().hex[:24]}",
                amount=request.amount,
                currency=request.currency,
                payer=request.payer,
                payee=request.payee,
                reference=request.reference,
                status=status,
                reason=reason,
                created_at=now,
                settles_at=settles_at,
                settle_to=settles_to,
                fingerprint=request.fingerprint,
            )
            conn.execute(
                f"INSERT INTO charges ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    charge.key,
                    charge.id,
                    charge.amount,
                    charge.currency,
                    charge.payer,
                    charge.payee,
                    charge.reference,
                    charge.status,
                    charge.reason,
                    _iso(charge.created_at),
                    _iso(charge.settles_at),
                    charge.settle_to,
                    charge.fingerprint,
                ),
            )
            return charge, True

    # -- accounts ----------------------------------------------------------------------------

    def set_balance(self, name: str, balance: Decimal | str | None) -> None:
        """Give `name` a balance (None: unlimited, the default for unknown accounts)."""
        value = None if balance is None else str(_decimal(balance, "balance"))
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO accounts (name, balance) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET balance = excluded.balance",
                (name, value),
            )

    def balance(self, name: str) -> Decimal | None:
        with self._tx() as conn:
            row = conn.execute("SELECT balance FROM accounts WHERE name = ?", (name,)).fetchone()
        return Decimal(row[0]) if row and row[0] is not None else None

    # -- internals ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _move(self, conn: sqlite3.Connection, request: ChargeRequest) -> str | None:
        """Debit the payer and credit the payee where they have balances; the decline reason
        if the payer's balance is short (nothing moved then)."""
        amount = Decimal(request.amount)
        payer = conn.execute(
            "SELECT balance FROM accounts WHERE name = ?", (request.payer,)
        ).fetchone()
        if payer and payer[0] is not None:
            available = Decimal(payer[0])
            if available < amount:
                return (
                    f"insufficient balance in {request.payer}: "
                    f"{available} available, {amount} needed"
                )
            conn.execute(
                "UPDATE accounts SET balance = ? WHERE name = ?",
                (str(available - amount), request.payer),
            )
        payee = conn.execute(
            "SELECT balance FROM accounts WHERE name = ?", (request.payee,)
        ).fetchone()
        if payee and payee[0] is not None:
            conn.execute(
                "UPDATE accounts SET balance = ? WHERE name = ?",
                (str(Decimal(payee[0]) + amount), request.payee),
            )
        return None

    def _settle_due(self, conn: sqlite3.Connection, key: str | None) -> None:
        # ISO strings of UTC times in one format compare like the times themselves.
        now = _utc_iso(self._clock())
        where = "status = 'pending' AND settles_at <= ?" + (" AND key = ?" if key else "")
        params: tuple[str, ...] = (now, key) if key else (now,)
        conn.execute(
            "UPDATE charges SET status = settle_to, reason = CASE settle_to "
            "WHEN 'declined' THEN 'declined by stand-in at settlement (injected)' "
            f"ELSE reason END WHERE {where}",
            params,
        )


def _utc_iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else _utc_iso(at)


def _decimal(value: Decimal | str, field: str) -> Decimal:
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{field}: expected a decimal string like 100.00") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{field}: expected a decimal string >= 0 like 100.00")
    return number


def _charge(row: tuple[Any, ...]) -> Charge:
    return Charge(
        key=row[0],
        id=row[1],
        amount=row[2],
        currency=row[3],
        payer=row[4],
        payee=row[5],
        reference=row[6],
        status=row[7],
        reason=row[8],
        created_at=datetime.fromisoformat(row[9]),
        settles_at=datetime.fromisoformat(row[10]) if row[10] else None,
        settle_to=row[11],
        fingerprint=row[12],
    )
