"""Reconciliation: paysched's occurrences, the provider's charges and paysched's ledger compared
over a period (`paysched reconcile`, POST /v1/reconciliations, PAYSCHED_RECONCILE_CRON).

The period [from, to) selects occurrences by `started_at` (their first claim: when the request
first went to the provider, which is what the provider's created time reflects) and ledger
transfers by their created time. The provider is asked for its charges created in
[from - MARGIN, to + MARGIN), so that a charge made just after its occurrence started (across
an edge of the period) is still seen; each charge then belongs to the report of the period its
occurrence started in (or, with no started occurrence, of the period it was created in), so
that reports of adjacent periods never both report it.

The "provider" is the HTTP provider's listing (GET /payments, see executors/http.py) when the
executor can list (`Listable`); for the ledger executor it is paysched's own ledger (each
occurrence's transfer); an executor that can do neither leaves `provider_listed` false: only
the unresolved occurrences are checked, by lookup when the executor has one.

Constant memory (O(page)) however long the period:

1. the listing is read page by page into a temporary table keyed by occurrence key, counting
   the charges per key (db/store/reconcile.py: Staging);
2. the staged charges are walked by key, each joined with its occurrence: charged here but
   not succeeded, amount or currency mismatch, more than one charge for the key;
3. paysched's succeeded and unresolved occurrences started in the period are walked by id,
   each joined with the staged charges: succeeded here but not charged, still unresolved;
4. the ledger's debits in the period are walked by id: transfers without an occurrence.

Each page's discrepancies are written to reconciliation_items as they are found; the counts go
to the report at the end. Nothing is changed by a run, except with `resolve`: an unknown or
needs_review occurrence is then settled from the provider's lookup (succeeded or declined;
never from a guess), recorded as "resolved by reconcile #N".

Kinds of discrepancy (stable strings):

- ``charged_not_succeeded``: the provider charged the key; the occurrence is not succeeded
  (or does not exist);
- ``succeeded_not_charged``: succeeded here, no succeeded charge at the provider;
- ``amount_mismatch``: the charge's amount or currency is not the payment's;
- ``duplicate_charge``: more than one charge for one key;
- ``unresolved``: the occurrence is still unknown or needs_review;
- ``ledger_without_occurrence``: a ledger transfer (not a deposit) that no succeeded
  occurrence stands behind.

``resolved`` items record what `resolve` settled; they are not discrepancies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

from paysched.actors import Actor
from paysched.clock import Clock
from paysched.db.actions import Acting, Subject
from paysched.db.store import Store
from paysched.db.store.base import short_error
from paysched.db.store.reconcile import Item, ReconcileStore, Reconciliation, Staging
from paysched.domain import OccurrenceState, OutboxMessage, currency_exponent, format_amount
from paysched.errors import InvalidInput, PayschedError
from paysched.events import Event, EventBus, EventKind
from paysched.executors.base import ExecutionResult, Listable, Outcome, Resolvable
from paysched.executors.claims import order_of
from paysched.notify.messages import NotifyPolicy, outbox_for, reconciliation_outbox
from paysched.threads import in_pool
from paysched.views import iso

log = logging.getLogger("paysched.reconcile")
P = ParamSpec("P")
R = TypeVar("R")

KINDS = (
    "charged_not_succeeded",
    "succeeded_not_charged",
    "amount_mismatch",
    "duplicate_charge",
    "unresolved",
    "ledger_without_occurrence",
)
RESOLVED = "resolved"
MARGIN = timedelta(hours=1)
PAGE = 500
LOOKUP_TIMEOUT_S = 60.0
UNRESOLVED = (OccurrenceState.UNKNOWN.value, OccurrenceState.NEEDS_REVIEW.value)


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime


def parse_bound(text: str, field: str, *, end: bool = False) -> datetime:
    """A period's bound: a date (YYYY-MM-DD, midnight UTC; as the end, the whole day is
    included: the next midnight) or an ISO 8601 time with a UTC offset."""
    raw = text.strip()
    problem = f"expected a date YYYY-MM-DD or an ISO 8601 time with a UTC offset, got {raw!r}"
    if len(raw) == 10:
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(field, problem) from None
        at = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return _in_range(at + timedelta(days=1) if end and day.year < 9999 else at, field)
    try:
        parsed = datetime.fromisoformat(raw) if raw.isascii() else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidInput(field, problem)
    try:
        return _in_range(parsed.astimezone(UTC), field)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        raise InvalidInput(field, problem) from None


# Times a period may span: the provider is asked an hour either side, which must stay a time.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _in_range(at: datetime, field: str) -> datetime:
    if not _EARLIEST <= at <= _LATEST:
        raise InvalidInput(field, "expected a time between 1970-01-01 and 9999-01-01")
    return at


def parse_period(start: str, end: str) -> Period:
    period = Period(parse_bound(start, "from"), parse_bound(end, "to", end=True))
    if period.end <= period.start:
        raise InvalidInput("to", "must be after from")
    return period


def previous_day(at: datetime) -> tuple[datetime, datetime]:
    """The whole UTC day before the one `at` falls in (a scheduled run's period)."""
    end = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=1), end


def discrepancies(rec: Reconciliation) -> int:
    return int(rec.counts.get("discrepancies", 0))


def summary(rec: Reconciliation) -> str:
    """One line for people (the CLI's last line, the log)."""
    period = f"{rec.period_from.isoformat()} .. {rec.period_to.isoformat()}"
    if rec.state != "done":
        return f"reconciliation #{rec.id} {period}: {rec.state}" + (
            f": {rec.error}" if rec.error else ""
        )
    c = rec.counts
    found = ", ".join(f"{c[k]} {k}" for k in KINDS if c.get(k))
    compared = {"provider": "the provider's listing", "ledger": "paysched's ledger"}.get(
        str(c.get("compared_with")), "lookups only (the provider cannot list)"
    )
    text = (
        f"reconciliation #{rec.id} {period}: {discrepancies(rec)} discrepancies"
        + (f" ({found})" if found else "")
        + f"; {c.get('occurrences', 0)} occurrences, {c.get('charges', 0)} charges compared"
        + f" with {compared}"
    )
    if c.get(RESOLVED):
        text += f"; {c[RESOLVED]} resolved from the provider"
    return text


def view(rec: Reconciliation) -> dict[str, Any]:
    return {
        "id": rec.id,
        "period_from": rec.period_from.isoformat(),
        "period_to": rec.period_to.isoformat(),
        "state": rec.state,
        "trigger": rec.trigger,
        "actor": rec.actor_name,
        "provider_listed": rec.provider_listed,
        "counts": rec.counts,
        "discrepancies": discrepancies(rec),
        "error": rec.error,
        "created_at": rec.created_at.isoformat(),
        "finished_at": rec.finished_at.isoformat() if rec.finished_at else None,
        "summary": summary(rec),
    }


def item_view(item: Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "occurrence_key": item.occurrence_key,
        "reference": item.reference,
        "detail": item.detail,
    }


def item_line(item: Item) -> str:
    d = item.detail
    ours = f"{d['amount']} {d['currency']}" if d.get("amount") else "-"
    provider = d.get("provider") or {}
    theirs = (
        f"{provider['amount']} {provider['currency']} {provider['status']}" if provider else "-"
    )
    extra = d.get("provider_says") or d.get("resolved_to") or d.get("note") or ""
    return (
        f"{item.kind:<26} {item.occurrence_key or '-'}  state={d.get('state') or '-'}  "
        f"ours={ours}  provider={theirs}"
        + (f"  ref={item.reference}" if item.reference else "")
        + (f"  ({extra})" if extra else "")
    )


def write_report(
    store: Store,
    rec: Reconciliation,
    as_json: bool,
    write: Callable[[str], Any],
    page: int = PAGE,
) -> None:
    """Print a report with all its items, read page by page (constant memory): a line per
    item then the summary line, or one JSON document {"reconciliation", "items"}."""
    reports = ReconcileStore(store.engine)
    if as_json:
        write('{"reconciliation": ' + json.dumps(view(rec)) + ', "items": [')
    after, first = 0, True
    while True:
        items = reports.items(rec.id, after, page)
        if not items:
            break
        after = items[-1].id
        for item in items:
            if as_json:
                write(("" if first else ",") + json.dumps(item_view(item)))
            else:
                write(item_line(item))
            first = False
    write("]}" if as_json else summary(rec))


def started_by(by: Actor, at: datetime, resolve: bool) -> Acting:
    """Starting a reconciliation is a person's action (it asks the provider for everything;
    with `resolve` it settles occurrences): recorded with its report's id and period."""

    def subject(rec: Reconciliation) -> Subject:
        period = {"from": str(iso(rec.period_from)), "to": str(iso(rec.period_to))}
        return Subject(detail={"reconciliation": rec.id, "resolve": int(resolve)} | period)

    return Acting(by, "reconcile", at, subject)


class Reconciler:
    def __init__(
        self,
        store: Store,
        executor: object | None,
        pool: ThreadPoolExecutor,
        clock: Clock,
        *,
        bus: EventBus | None = None,
        policy: NotifyPolicy | None = None,
        notify_targets: Sequence[str] = (),
        page_size: int = PAGE,
        margin: timedelta = MARGIN,
    ) -> None:
        self.store = store
        self.reports = ReconcileStore(store.engine)
        self.executor = executor
        self.pool = pool
        self.clock = clock
        self.bus = bus
        self.policy = policy
        self.notify_targets = tuple(notify_targets)
        self.page_size = page_size
        self.margin = margin

    async def _db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await in_pool(self.pool, fn, *args, **kwargs)

    async def run(
        self,
        period_from: datetime,
        period_to: datetime,
        *,
        trigger: str = "cli",
        by: Actor | None = None,
        dedup_key: str | None = None,
        resolve: bool = False,
    ) -> Reconciliation | None:
        """Run one reconciliation to its end; its report, or None when `dedup_key` was
        already taken (another process runs or ran it). `by`: the person who asked (None:
        the schedule), recorded as who acted, with every occurrence `resolve` settles."""
        now = self.clock.now()
        acting = None if by is None else started_by(by, now, resolve)
        rid = await self._db(
            self.reports.start,
            period_from,
            period_to,
            trigger,
            None if by is None else by.describe(),
            dedup_key,
            now,
            None if acting is None else acting.then(),
        )
        if rid is None:
            return None
        if acting is not None:
            acting.logged()
        await self.complete(rid, Period(period_from, period_to), resolve=resolve, by=by)
        return await self._db(self.reports.get, rid)

    async def complete(
        self, rid: int, period: Period, *, resolve: bool = False, by: Actor | None = None
    ) -> None:
        """Fill the running report `rid` and finish it (done, or failed with the error);
        with `resolve`, settle what the provider answers for, as `by`."""
        counts: dict[str, Any] = dict.fromkeys(KINDS, 0)
        counts.update({RESOLVED: 0, "charges": 0, "occurrences": 0})
        try:
            staging = await self._db(Staging, self.store.engine)
            try:
                listed = await self._stage(staging, period, counts)
                if listed:
                    await self._charges(staging, rid, period, counts)
                await self._occurrences(staging, rid, period, counts, listed, resolve, by)
                await self._ledger(staging, rid, period, counts)
            finally:
                await self._db(staging.close)
        except asyncio.CancelledError:
            await asyncio.shield(self._fail(rid, "interrupted", counts))
            raise
        except Exception as exc:
            log.exception("reconciliation #%s failed", rid)
            await self._fail(rid, short_error(exc), counts)
            return
        counts["discrepancies"] = sum(int(counts[k]) for k in KINDS)
        outbox: list[OutboxMessage] = []
        if counts["discrepancies"] and self.notify_targets:
            outbox = reconciliation_outbox(
                self.notify_targets, rid, period.start, period.end, counts, self.clock.now()
            )
        await self._db(self.reports.finish, rid, counts, listed, self.clock.now(), outbox)
        log.info("%s", summary(await self._db(self.reports.get, rid)))

    async def _fail(self, rid: int, error: str, counts: dict[str, Any]) -> None:
        try:
            await self._db(self.reports.fail, rid, error, counts, self.clock.now())
        except Exception as exc:  # the database itself is away: the report stays running
            log.error(
                "reconciliation #%s failed (%s) and could not be marked so: %s",
                rid,
                error,
                short_error(exc),
            )

    # -- 1. the listing ----------------------------------------------------------------------

    async def _stage(self, staging: Staging, period: Period, counts: dict[str, Any]) -> bool:
        """Stage the provider's charges; whether there is a listing at all."""
        from paysched.executors.ledger import LedgerExecutor

        # Up to the last settle of an occurrence started in the period: its charge may be
        # hours after the period (a late retry, a resolve), and is then still the period's.
        settled = await self._db(staging.last_settled, period.start, period.end)
        lo = period.start - self.margin
        hi = max(period.end, settled or period.end) + self.margin
        if isinstance(self.executor, LedgerExecutor):
            counts["compared_with"] = "ledger"
            after = 0
            while True:
                charges, last = await self._db(
                    staging.ledger_charges, lo, hi, after, self.page_size
                )
                if last is None:
                    return True
                await self._db(staging.add, charges)
                counts["charges"] += len(charges)
                after = last
        if not isinstance(self.executor, Listable):
            counts["compared_with"] = "lookups"
            return False
        cursor: str | None = None
        first = True
        while True:
            try:
                page = await self.executor.list_charges(lo, hi, cursor, self.page_size)
            except NotImplementedError:
                if not first:
                    raise
                counts["compared_with"] = "lookups"
                return False
            first = False
            await self._db(staging.add, page.charges)
            counts["charges"] += len(page.charges)
            if page.next_cursor is None:
                counts["compared_with"] = "provider"
                return True
            cursor = page.next_cursor

    # -- 2. the provider's side --------------------------------------------------------------

    async def _charges(
        self, staging: Staging, rid: int, period: Period, counts: dict[str, Any]
    ) -> None:
        after: str | None = None
        while True:
            rows = await self._db(staging.charges_page, after, self.page_size)
            if not rows:
                return
            after = rows[-1].key
            items = []
            for r in rows:
                at = r.started_at if r.started_at is not None else r.created_at
                if at is not None and not period.start <= at < period.end:
                    continue  # the neighbouring period's report has it
                items += _charge_items(r)
            await self._add(rid, items, counts)

    # -- 3. paysched's side ------------------------------------------------------------------

    async def _occurrences(
        self,
        staging: Staging,
        rid: int,
        period: Period,
        counts: dict[str, Any],
        listed: bool,
        resolve: bool,
        by: Actor | None,
    ) -> None:
        after = 0
        while True:
            rows = await self._db(
                staging.occurrences_page, period.start, period.end, after, self.page_size
            )
            if not rows:
                return
            after = rows[-1].id
            counts["occurrences"] += len(rows)
            items = []
            for r in rows:
                if r.state in UNRESOLVED:
                    items.append(await self._unresolved(r, rid, listed, resolve, by))
                elif listed and not r.n_succeeded:
                    items.append(
                        _item(
                            "succeeded_not_charged",
                            r,
                            r.reference,
                            {
                                "state": r.state,
                                **_ours(r),
                                **_theirs(r),
                            },
                        )
                    )
            await self._add(rid, items, counts)

    async def _unresolved(
        self, r: Any, rid: int, listed: bool, resolve: bool, by: Actor | None
    ) -> dict[str, Any]:
        detail: dict[str, Any] = {"state": r.state, **_ours(r)}
        if listed:
            detail.update(_theirs(r))
        if not (resolve or not listed) or not isinstance(self.executor, Resolvable):
            return _item("unresolved", r, r.reference, detail)
        claim = await self._db(self.store.execution.unresolved, r.id)
        try:
            answer = await asyncio.wait_for(self.executor.lookup(order_of(claim)), LOOKUP_TIMEOUT_S)
        except Exception as exc:  # a lookup that breaks tells nothing
            answer = ExecutionResult.unknown(f"lookup failed: {short_error(exc)}")
        detail["provider_says"] = answer.outcome.value + (
            f": {answer.reason}" if answer.reason else ""
        )
        if not resolve or answer.outcome not in (Outcome.SUCCEEDED, Outcome.DECLINED):
            return _item("unresolved", r, answer.reference or r.reference, detail)
        target = (
            OccurrenceState.SUCCEEDED
            if answer.outcome == Outcome.SUCCEEDED
            else OccurrenceState.FAILED
        )
        why = answer.reason or "declined by the provider"
        note = f"resolved by reconcile #{rid}: the provider says " + (
            "succeeded" if target == OccurrenceState.SUCCEEDED else f"declined ({why})"
        )
        now = self.clock.now()
        outbox: list[OutboxMessage] = []
        if self.policy is not None:
            event = "succeeded" if target == OccurrenceState.SUCCEEDED else "failed"
            outbox = outbox_for(
                self.policy,
                event,
                claim.payment,
                claim.occurrence,
                claim.attempt,
                now,
                None if event == "succeeded" else why,
            )
        # A person's --resolve is their action, as a resolve by hand is (who, and on what).
        said: dict[str, str | int] = {"outcome": target.value, "reason": note}
        subject = Subject(claim.payment.id, claim.occurrence.id, said)
        acting = None if by is None else Acting(by, "resolve", now, lambda _: subject)
        hook = None if acting is None else acting.then()
        done = await self._db(
            self.store.execution.resolve, claim, target, now, note, outbox, answer.reference, hook
        )
        if not done:  # settled meanwhile (the resolver, a person): report what was seen
            detail["resolve"] = "changed meanwhile; not resolved"
            return _item("unresolved", r, r.reference, detail)
        if acting is not None:
            acting.logged()
        if self.bus is not None:
            self.bus.emit(
                Event(
                    EventKind.RESOLVED,
                    now,
                    claim.occurrence.key,
                    claim.payment.id,
                    claim.attempt,
                    {"outcome": target.value, "by": "reconcile"},
                )
            )
        detail["resolved_to"] = target.value
        return _item(RESOLVED, r, answer.reference or r.reference, detail)

    # -- 4. the ledger -----------------------------------------------------------------------

    async def _ledger(
        self, staging: Staging, rid: int, period: Period, counts: dict[str, Any]
    ) -> None:
        # With the ledger as the provider, a transfer of an occurrence that is not succeeded
        # is already charged_not_succeeded; only transfers of no occurrence are left here.
        with_unsucceeded = counts.get("compared_with") != "ledger"
        after = 0
        while True:
            rows = await self._db(
                staging.stray_transfers,
                period.start,
                period.end,
                after,
                self.page_size,
                with_unsucceeded,
            )
            if not rows:
                return
            after = rows[-1].id
            items = [
                {
                    "kind": "ledger_without_occurrence",
                    "occurrence_key": r.key,
                    "reference": r.transfer_id,
                    "detail": {
                        "transfer": r.transfer_id,
                        "account": r.name,
                        "amount": format_amount(-int(r.amount), r.currency),
                        "currency": r.currency,
                        "created_at": r.created_at.isoformat(),
                        "state": r.state,
                    },
                }
                for r in rows
            ]
            await self._add(rid, items, counts)

    async def _add(self, rid: int, items: list[dict[str, Any]], counts: dict[str, Any]) -> None:
        for item in items:
            counts[item["kind"]] = int(counts.get(item["kind"], 0)) + 1
        await self._db(self.reports.add_items, rid, items)


def _item(kind: str, r: Any, reference: str | None, detail: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "occurrence_key": r.key, "reference": reference, "detail": detail}


def _ours(r: Any) -> dict[str, Any]:
    if r.our_amount is None:
        return {}
    return {"amount": format_amount(int(r.our_amount), r.our_currency), "currency": r.our_currency}


def _theirs(r: Any) -> dict[str, Any]:
    if r.charge_id is None:
        return {"provider": None}
    return {
        "provider": {
            "id": r.charge_id,
            "status": r.status,
            "amount": r.amount,
            "currency": r.currency,
            "charges": r.n,
        }
    }


def _charge_items(r: Any) -> list[dict[str, Any]]:
    """The provider-side discrepancies of one staged key (see the module's doc)."""
    items = []
    detail = {"state": r.state, **_ours(r), **_theirs(r)}
    if r.n > 1:
        items.append(
            _item(
                "duplicate_charge", r, r.charge_id, {**detail, "other_charges": r.other_ids.split()}
            )
        )
    if r.status != "succeeded" or r.state in UNRESOLVED:
        return items  # nothing moved, or the occurrences' walk reports it as unresolved
    if r.occurrence_id is None:
        items.append(
            _item(
                "charged_not_succeeded",
                r,
                r.charge_id,
                {**detail, "state": None, "note": "no occurrence with this key"},
            )
        )
    elif r.state != OccurrenceState.SUCCEEDED.value:
        items.append(_item("charged_not_succeeded", r, r.charge_id, detail))
    elif not _same_money(r):
        items.append(_item("amount_mismatch", r, r.charge_id, detail))
    return items


def _same_money(r: Any) -> bool:
    if r.currency != r.our_currency:
        return False
    try:
        minor = Decimal(r.amount).scaleb(currency_exponent(r.currency))
    except (InvalidOperation, ValueError, ArithmeticError, PayschedError):
        return False
    return bool(minor == int(r.our_amount))
