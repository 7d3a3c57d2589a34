"""Accounts and the double-entry ledger: deposits, balances, the ledger's own checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, func, insert, select, update

from paysched.clock import to_ms
from paysched.db import tables as t
from paysched.db.store.base import AfterWrite, Database, after, insert_ignore
from paysched.db.store.rows import account_from
from paysched.domain import (
    MAX_AMOUNT,
    MAX_BALANCE,
    MAX_ISSUED,
    Account,
    OccurrenceState,
    currency_exponent,
    format_amount,
    new_account_name,
    normalise_name,
    refuse_external,
)
from paysched.errors import Conflict, ConstraintViolation, InvalidInput, NotFound


@dataclass(frozen=True, slots=True)
class LedgerReport:
    balanced: bool
    problems: list[str]


def external_name(currency: str) -> str:
    return f"@external:{currency}"


def write_entries(conn: Connection, rows: list[dict[str, object]]) -> None:
    """Append ledger entries (see `entries`): the one place that writes the ledger."""
    if rows:
        conn.execute(insert(t.ledger_entries), rows)


def entries(
    transfer_id: str,
    debit_id: int,
    credit_id: int,
    amount: int,
    occurrence_id: int | None,
    now: datetime,
) -> list[dict[str, object]]:
    """The two ledger rows of one transfer: they sum to zero."""
    return [
        dict(
            transfer_id=transfer_id,
            account_id=debit_id,
            amount=-amount,
            occurrence_id=occurrence_id,
            created_at=now,
        ),
        dict(
            transfer_id=transfer_id,
            account_id=credit_id,
            amount=amount,
            occurrence_id=occurrence_id,
            created_at=now,
        ),
    ]


# An account by name, built once (every create reads its two): building a statement and its
# cache key cost more CPU than running it.
_BY_NAME = select(t.accounts).where(t.accounts.c.name == bindparam("name"))


def account_named(conn: Connection, name: str) -> Account:
    """The account of that name, read on `conn`; NotFound if none."""
    # Looked up as stored: "zoé" typed in either Unicode form, " alice " as "alice". A
    # name no account can have (a NUL, a lone surrogate) names none and never reaches SQL.
    try:
        name = normalise_name(name)
    except InvalidInput:
        raise NotFound(f"no account named {name!r}") from None
    row = conn.execute(_BY_NAME, {"name": name}).first()
    if row is None:
        raise NotFound(f"no account named {name!r}")
    return account_from(row)


class Accounts:
    """Accounts and the ledger: create, deposit, read, and the ledger's own checks."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_account(
        self,
        name: str,
        currency: str,
        now: datetime,
        then: AfterWrite | None = None,
        remind: timedelta | None = None,
    ) -> Account:
        """`remind`: the default reminder of the payments it will pay (None: none)."""
        name = new_account_name(name)
        currency_exponent(currency)  # an ISO 4217 currency with minor units, or InvalidInput
        remind_s = None if remind is None else int(remind.total_seconds())
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(t.accounts).values(
                        name=name,
                        currency=currency,
                        kind="user",
                        balance=0,
                        created_at=now,
                        remind_s=remind_s,
                    )
                )
                account = account_named(conn, name)
                after(then, conn, account)
                return account
        except ConstraintViolation:
            raise Conflict(f"account {name!r} already exists") from None

    def set_account_remind(
        self, name: str, remind: timedelta | None, then: AfterWrite | None = None
    ) -> Account:
        """The account's reminder default (None: off), for the payments created from now on;
        those it pays already keep their own."""
        refuse_external(name)
        with self.db.engine.begin() as conn:
            account = account_named(conn, name)
            conn.execute(
                update(t.accounts)
                .where(t.accounts.c.id == account.id)
                .values(remind_s=None if remind is None else int(remind.total_seconds()))
            )
            account = account_named(conn, name)
            after(then, conn, account)
            return account

    def get_account(self, name: str) -> Account:
        with self.db.reading() as conn:
            return account_named(conn, name)

    def list_accounts(self, limit: int | None = None, after: str | None = None) -> list[Account]:
        """By name; `after` continues a page."""
        query = select(t.accounts).where(t.accounts.c.kind == "user").order_by(t.accounts.c.name)
        if after is not None:
            query = query.where(t.accounts.c.name > after)
        with self.db.reading() as conn:
            return [account_from(r) for r in conn.execute(query.limit(limit))]

    def deposit(
        self, name: str, amount: int, now: datetime, then: AfterWrite | None = None
    ) -> Account:
        """Money entering paysched: the currency's external account is the other side.

        Checked before anything is written: the amount, the account's balance after it and
        the currency's total deposits stay within the limits (domain.MAX_*), so no balance
        can overflow its column on either database."""
        refuse_external(name)
        if amount <= 0:
            raise InvalidInput("amount", "must be greater than zero")
        with self.db.engine.begin() as conn:
            account = account_named(conn, name)
            cur = account.currency
            if amount > MAX_AMOUNT:
                raise InvalidInput("amount", f"at most {format_amount(MAX_AMOUNT, cur)} {cur}")
            external = self._external_account(conn, cur, now)
            held = {
                r.id: int(r.balance)
                for r in conn.execute(
                    select(t.accounts.c.id, t.accounts.c.balance)
                    .where(t.accounts.c.id.in_([account.id, external]))
                    .order_by(t.accounts.c.id)
                    .with_for_update()
                )
            }
            if held[account.id] + amount > MAX_BALANCE:
                raise InvalidInput(
                    "amount",
                    f"{account.name!r} would hold more than the balance "
                    f"limit of {format_amount(MAX_BALANCE, cur)} {cur}",
                )
            if -held[external] + amount > MAX_ISSUED:
                raise InvalidInput(
                    "amount",
                    f"deposits in {cur} would exceed the limit of "
                    f"{format_amount(MAX_ISSUED, cur)} {cur} in all",
                )
            transfer_id = f"deposit-{account.id}-{to_ms(now)}-{amount}"
            for account_id, delta in ((external, -amount), (account.id, amount)):
                conn.execute(
                    update(t.accounts)
                    .where(t.accounts.c.id == account_id)
                    .values(balance=t.accounts.c.balance + delta)
                )
            write_entries(conn, entries(transfer_id, external, account.id, amount, None, now))
            result = account_named(conn, name)
            after(then, conn, result)
            return result

    def _external_account(self, conn: Connection, currency: str, now: datetime) -> int:
        name = external_name(currency)
        values = dict(name=name, currency=currency, kind="external", balance=0, created_at=now)
        conn.execute(insert_ignore(self.db.dialect, t.accounts, ["name"]).values(**values))
        found = conn.execute(select(t.accounts.c.id).where(t.accounts.c.name == name)).scalar_one()
        return int(found)

    def succeeded_transfer_count(self) -> int:
        with self.db.reading() as conn:
            n = conn.execute(
                select(func.count(func.distinct(t.ledger_entries.c.occurrence_id)))
            ).scalar_one()
            return int(n)

    def ledger_report(self) -> LedgerReport:
        """Double-entry checks: every transfer sums to zero, every balance equals its entries,
        and each succeeded occurrence moved money exactly once."""
        problems: list[str] = []
        le = t.ledger_entries.c
        with self.db.reading() as conn:
            unbalanced = conn.execute(
                select(le.transfer_id, func.sum(le.amount))
                .group_by(le.transfer_id)
                .having(func.sum(le.amount) != 0)
            ).all()
            problems += [f"transfer {tid} sums to {total}" for tid, total in unbalanced]
            sums = (
                select(le.account_id, func.sum(le.amount).label("s"))
                .group_by(le.account_id)
                .subquery()
            )
            mismatched = conn.execute(
                select(t.accounts.c.name, t.accounts.c.balance, sums.c.s)
                .select_from(t.accounts.outerjoin(sums, sums.c.account_id == t.accounts.c.id))
                .where(t.accounts.c.balance != func.coalesce(sums.c.s, 0))
            ).all()
            problems += [f"account {n} balance {b} != entries {s}" for n, b, s in mismatched]
            # The ledger executor records its transfer id (the occurrence key) as the
            # reference; an occurrence paid by a provider has no ledger entries.
            occ = t.occurrences.c
            moved = select(le.occurrence_id).where(le.occurrence_id.is_not(None)).distinct()
            missing = conn.execute(
                select(occ.key)
                .where(occ.state == OccurrenceState.SUCCEEDED.value)
                .where(occ.reference == occ.key)
                .where(occ.id.not_in(moved))
            ).all()
            problems += [
                f"occurrence {k} succeeded in the ledger without a transfer" for (k,) in missing
            ]
            stray = conn.execute(
                select(occ.key)
                .where(occ.id.in_(moved))
                .where(occ.state != OccurrenceState.SUCCEEDED.value)
            ).all()
            problems += [f"occurrence {k} moved money but is not succeeded" for (k,) in stray]
        return LedgerReport(balanced=not problems, problems=problems)
