"""Reconciliations in the database: their reports and items, and the staging of the provider's
listing that the comparison (paysched.reconcile) joins against.

The provider lists its charges by created time, paysched walks its occurrences by id: to
compare them in constant memory, each page of the listing is written to a TEMPORARY table
keyed by the occurrence key (one row per key, with how many charges the provider has for it),
and both sides are then walked page by page with joins. The temporary table lives on one
connection (`Staging`), held for the run and dropped at its end; every statement on it runs in
its own short transaction, so no lock is held between pages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)

from paysched.db import tables as t
from paysched.db.engine import READ_ONLY
from paysched.db.store.base import (
    AfterWrite,
    Database,
    after,
    enqueue_notifications,
    existing_id,
    insert_ignore,
)
from paysched.db.tables import UTCDateTime
from paysched.domain import OccurrenceState, OutboxMessage, format_amount
from paysched.errors import NotFound
from paysched.executors.base import ProviderCharge

_staging_meta = MetaData()
# One row per occurrence key the provider listed: its first succeeded charge (else its first
# one), and how many charges (and succeeded ones) it has for the key.
staged = Table(
    "paysched_reconcile_charges",
    _staging_meta,
    Column("key", Text, primary_key=True),
    Column("charge_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=True),
    Column("n", Integer, nullable=False),
    Column("n_succeeded", Integer, nullable=False),
    Column("other_ids", Text, nullable=False),  # a few of the other charges' ids, for people
    prefixes=["TEMPORARY"],
)
MAX_OTHER_IDS = 300  # characters of other_ids kept


@dataclass(frozen=True, slots=True)
class Reconciliation:
    id: int
    period_from: datetime
    period_to: datetime
    state: str
    trigger: str
    actor_name: str | None
    dedup_key: str | None
    provider_listed: bool | None
    counts: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    kind: str
    occurrence_key: str | None
    reference: str | None
    detail: dict[str, Any]


def _reconciliation(row: Row[Any]) -> Reconciliation:
    return Reconciliation(
        id=row.id,
        period_from=row.period_from,
        period_to=row.period_to,
        state=row.state,
        trigger=row.trigger,
        actor_name=row.actor_name,
        dedup_key=row.dedup_key,
        provider_listed=row.provider_listed,
        counts=json.loads(row.counts or "{}"),
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


class ReconcileStore(Database):
    """Reports: started, filled page by page, finished (or failed) in one transaction with
    their notification."""

    def start(
        self,
        period_from: datetime,
        period_to: datetime,
        trigger: str,
        actor: str | None,
        dedup_key: str | None,
        now: datetime,
        then: AfterWrite | None = None,
    ) -> int | None:
        """A new running report; None when `dedup_key` is taken (another process runs it).
        `then(conn, report)` runs in the same transaction (an idempotency key's answer)."""
        values = dict(
            period_from=period_from,
            period_to=period_to,
            state="running",
            trigger=trigger,
            actor_name=actor,
            dedup_key=dedup_key,
            counts="{}",
            created_at=now,
        )
        stmt = insert_ignore(self.dialect, t.reconciliations, ["dedup_key"]).values(**values)
        with self.engine.begin() as conn:
            row = conn.execute(stmt.returning(*t.reconciliations.c)).first()
            if row is not None:
                after(then, conn, _reconciliation(row))
        return None if row is None else int(row.id)

    def release(self, dedup_key: str, stale_before: datetime, now: datetime) -> bool:
        """Free `dedup_key` for another run when its report will never be done: it failed, or
        it is still `running` although it started before `stale_before` (its process died
        mid-run). That report keeps its rows, under the key suffixed with its id, marked
        failed. A compare-and-set: of processes releasing at once, one does. True if it did."""
        r = t.reconciliations.c
        with self.engine.begin() as conn:
            row = conn.execute(
                select(r.id, r.state, r.created_at).where(r.dedup_key == dedup_key)
            ).first()
            if row is None or row.state == "done":
                return False
            if row.state == "running" and row.created_at >= stale_before:
                return False  # another process is running it now
            values: dict[str, Any] = {"dedup_key": f"{dedup_key}#{row.id}"}
            if row.state == "running":
                error = "abandoned: its process stopped before it finished"
                values |= {"state": "failed", "finished_at": now, "error": error}
            done = conn.execute(
                update(t.reconciliations)
                .where(r.id == row.id, r.state == row.state, r.dedup_key == dedup_key)
                .values(**values)
            )
            return done.rowcount == 1

    def add_items(self, reconciliation_id: int, items: Sequence[dict[str, Any]]) -> None:
        if not items:
            return
        rows = [
            dict(
                reconciliation_id=reconciliation_id,
                kind=i["kind"],
                occurrence_key=i.get("occurrence_key"),
                reference=i.get("reference"),
                detail=json.dumps(i.get("detail", {}), sort_keys=True),
            )
            for i in items
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(t.reconciliation_items), rows)

    def finish(
        self,
        reconciliation_id: int,
        counts: dict[str, Any],
        provider_listed: bool,
        now: datetime,
        outbox: Sequence[OutboxMessage] = (),
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.reconciliations)
                .where(t.reconciliations.c.id == reconciliation_id)
                .values(
                    state="done",
                    counts=json.dumps(counts, sort_keys=True),
                    provider_listed=provider_listed,
                    finished_at=now,
                )
            )
            enqueue_notifications(conn, outbox, now)

    def fail(
        self, reconciliation_id: int, error: str, counts: dict[str, Any], now: datetime
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.reconciliations)
                .where(t.reconciliations.c.id == reconciliation_id)
                .values(
                    state="failed",
                    error=error[:1000],
                    counts=json.dumps(counts, sort_keys=True),
                    finished_at=now,
                )
            )

    def get(self, reconciliation_id: int) -> Reconciliation:
        existing_id(reconciliation_id, "reconciliation")
        with self.reading() as conn:
            row = conn.execute(
                select(t.reconciliations).where(t.reconciliations.c.id == reconciliation_id)
            ).first()
        if row is None:
            raise NotFound(f"no reconciliation with id {reconciliation_id}")
        return _reconciliation(row)

    def by_dedup_key(self, dedup_key: str) -> Reconciliation | None:
        with self.reading() as conn:
            row = conn.execute(
                select(t.reconciliations).where(t.reconciliations.c.dedup_key == dedup_key)
            ).first()
        return None if row is None else _reconciliation(row)

    def latest(self, limit: int, before_id: int | None = None) -> list[Reconciliation]:
        """Newest first; `before_id` continues a page."""
        r = t.reconciliations.c
        query = select(t.reconciliations).order_by(r.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(r.id < before_id)
        with self.reading() as conn:
            return [_reconciliation(row) for row in conn.execute(query)]

    def items(self, reconciliation_id: int, after_id: int, limit: int) -> list[Item]:
        i = t.reconciliation_items.c
        with self.reading() as conn:
            rows = conn.execute(
                select(t.reconciliation_items)
                .where(i.reconciliation_id == reconciliation_id)
                .where(i.id > after_id)
                .order_by(i.id)
                .limit(limit)
            )
            return [
                Item(r.id, r.kind, r.occurrence_key, r.reference, json.loads(r.detail))
                for r in rows
            ]


class Staging:
    """The provider's listing, staged on one held connection (see the module's doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # It writes only its temporary table: on SQLite a deferred BEGIN (READ_ONLY), so a page
        # never takes the database's write lock from the workers.
        self.conn: Connection = engine.connect().execution_options(**{READ_ONLY: True})
        with self.conn.begin():
            # Left over by a run that died on this pooled connection: start empty.
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staged.name}")
            staged.create(self.conn)

    def close(self) -> None:
        try:
            with self.conn.begin():
                self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staged.name}")
        finally:
            self.conn.close()

    def add(self, charges: Sequence[ProviderCharge]) -> None:
        """Stage one page of the listing; a key listed again (in this page or an earlier
        one) counts one more charge."""
        rows: dict[str, dict[str, Any]] = {}
        for c in charges:
            ok = int(c.status == "succeeded")
            row = rows.get(c.key)
            if row is None:
                rows[c.key] = dict(
                    key=c.key,
                    charge_id=c.id,
                    status=c.status,
                    amount=c.amount,
                    currency=c.currency,
                    created_at=c.created_at,
                    n=1,
                    n_succeeded=ok,
                    other_ids="",
                )
                continue
            row["n"] += 1
            row["n_succeeded"] += ok
            if ok and row["status"] != "succeeded":  # the succeeded one is the one compared
                row["other_ids"] = _more(row["other_ids"], row["charge_id"])
                row.update(
                    charge_id=c.id,
                    status=c.status,
                    amount=c.amount,
                    currency=c.currency,
                    created_at=c.created_at,
                )
            else:
                row["other_ids"] = _more(row["other_ids"], c.id)
        if not rows:
            return
        stmt: Any
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            stmt = postgresql.insert(staged)
        else:
            from sqlalchemy.dialects import sqlite

            stmt = sqlite.insert(staged)
        new = stmt.excluded
        s = staged.c
        takes_new = and_(s.status != "succeeded", new.status == "succeeded")
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_=dict(
                n=s.n + new.n,
                n_succeeded=s.n_succeeded + new.n_succeeded,
                other_ids=func.substr(
                    s.other_ids + " " + new.charge_id + " " + new.other_ids, 1, MAX_OTHER_IDS
                ),
                # When only the later page has a succeeded charge for the key, compare that one.
                charge_id=_case(takes_new, new.charge_id, s.charge_id),
                status=_case(takes_new, new.status, s.status),
                amount=_case(takes_new, new.amount, s.amount),
                currency=_case(takes_new, new.currency, s.currency),
                created_at=_case(takes_new, new.created_at, s.created_at),
            ),
        )
        with self.conn.begin():
            self.conn.execute(stmt, list(rows.values()))

    def charges_page(self, after_key: str | None, limit: int) -> list[Row[Any]]:
        """Staged charges by key, each with its occurrence (if any) and payment."""
        s, o, p = staged.c, t.occurrences.c, t.payments.c
        query = (
            select(
                s.key,
                s.charge_id,
                s.status,
                s.amount,
                s.currency,
                s.created_at,
                s.n,
                s.n_succeeded,
                s.other_ids,
                o.id.label("occurrence_id"),
                o.state,
                o.started_at,
                o.reference,
                p.amount.label("our_amount"),
                p.currency.label("our_currency"),
            )
            .select_from(
                staged.outerjoin(t.occurrences, o.key == s.key).outerjoin(
                    t.payments, p.id == o.payment_id
                )
            )
            .order_by(s.key)
            .limit(limit)
        )
        if after_key is not None:
            query = query.where(s.key > after_key)
        with self.conn.begin():
            return list(self.conn.execute(query))

    def last_settled(self, period_from: datetime, period_to: datetime) -> datetime | None:
        """When the last of the occurrences started in the period that succeeded was settled
        (None: none did). A charge is made before its success is recorded, so the charges of
        the period's occurrences are all listed up to then — a retry sent hours later, or an
        unknown outcome resolved then, included."""
        o = t.occurrences.c
        query = (
            select(func.max(o.finished_at))
            .where(o.started_at >= period_from)
            .where(o.started_at < period_to)
            .where(o.state == OccurrenceState.SUCCEEDED.value)
        )
        with self.conn.begin():
            last: datetime | None = self.conn.execute(query).scalar_one_or_none()
        return last

    def occurrences_page(
        self, period_from: datetime, period_to: datetime, after_id: int, limit: int
    ) -> list[Row[Any]]:
        """paysched's occurrences started in the period that are succeeded or unresolved, by
        id, each with what the provider listed for its key (NULLs when nothing)."""
        s, o, p = staged.c, t.occurrences.c, t.payments.c
        states = [
            OccurrenceState.SUCCEEDED.value,
            OccurrenceState.UNKNOWN.value,
            OccurrenceState.NEEDS_REVIEW.value,
        ]
        query = (
            select(
                o.id,
                o.key,
                o.state,
                o.started_at,
                o.reference,
                o.payment_id,
                p.amount.label("our_amount"),
                p.currency.label("our_currency"),
                s.charge_id,
                s.status,
                s.amount,
                s.currency,
                s.n,
                s.n_succeeded,
            )
            .select_from(
                t.occurrences.join(t.payments, p.id == o.payment_id).outerjoin(
                    staged, s.key == o.key
                )
            )
            .where(o.id > after_id)
            .where(o.started_at >= period_from)
            .where(o.started_at < period_to)
            .where(o.state.in_(states))
            .order_by(o.id)
            .limit(limit)
        )
        with self.conn.begin():
            return list(self.conn.execute(query))

    def ledger_charges(
        self, created_from: datetime, created_to: datetime, after_id: int, limit: int
    ) -> tuple[list[ProviderCharge], int | None]:
        """The ledger executor's transfers as a provider would list them: each payer's
        debit of an occurrence, created in [created_from, created_to), by entry id. Returns
        the page and the last entry id read (None: nothing more)."""
        le, o, a = t.ledger_entries.c, t.occurrences.c, t.accounts.c
        query = (
            select(le.id, le.transfer_id, le.amount, le.created_at, o.key, a.currency)
            .select_from(
                t.ledger_entries.join(t.occurrences, o.id == le.occurrence_id).join(
                    t.accounts, a.id == le.account_id
                )
            )
            .where(le.id > after_id)
            .where(le.created_at >= created_from)
            .where(le.created_at < created_to)
            .where(le.amount < 0)
            .order_by(le.id)
            .limit(limit)
        )
        with self.conn.begin():
            rows = list(self.conn.execute(query))
        charges = [
            ProviderCharge(
                key=r.key,
                id=r.transfer_id,
                status="succeeded",
                amount=format_amount(-int(r.amount), r.currency),
                currency=r.currency,
                created_at=r.created_at,
            )
            for r in rows
        ]
        return charges, (int(rows[-1].id) if rows else None)

    def stray_transfers(
        self,
        period_from: datetime,
        period_to: datetime,
        after_id: int,
        limit: int,
        with_unsucceeded: bool,
    ) -> list[Row[Any]]:
        """Ledger debits in the period that no succeeded occurrence stands behind: none at
        all (and not a deposit, whose debit is the external account's), or, when
        `with_unsucceeded`, an occurrence that is not succeeded. By entry id."""
        le, o, a = t.ledger_entries.c, t.occurrences.c, t.accounts.c
        orphan = and_(le.occurrence_id.is_(None), a.kind != "external")
        if with_unsucceeded:
            orphan = or_(
                orphan, and_(o.id.is_not(None), o.state != OccurrenceState.SUCCEEDED.value)
            )
        query = (
            select(
                le.id, le.transfer_id, le.amount, le.created_at, a.name, a.currency, o.key, o.state
            )
            .select_from(
                t.ledger_entries.join(t.accounts, a.id == le.account_id).outerjoin(
                    t.occurrences, o.id == le.occurrence_id
                )
            )
            .where(le.id > after_id)
            .where(le.created_at >= period_from)
            .where(le.created_at < period_to)
            .where(le.amount < 0)
            .where(orphan)
            .order_by(le.id)
            .limit(limit)
        )
        with self.conn.begin():
            return list(self.conn.execute(query))


def _more(ids: str, charge_id: str) -> str:
    return (f"{ids} {charge_id}".strip())[:MAX_OTHER_IDS]


def _case(cond: Any, then: Any, otherwise: Any) -> Any:
    from sqlalchemy import case

    return case((cond, then), else_=otherwise)
