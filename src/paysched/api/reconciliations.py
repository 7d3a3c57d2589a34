"""/v1/reconciliations: start a reconciliation of a period (it runs in the background), follow
its report and page through its discrepancies, list the latest reports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from paysched.actors import Actor
from paysched.api import pages
from paysched.api.deps import paysched, problems
from paysched.api.idempotent import IdempotencyKey, once
from paysched.api.models import Id, Page, Reconciliation, ReconciliationCreate, ReconciliationDetail
from paysched.api.security import Admin, Read
from paysched.db.apikeys import ApiKey
from paysched.db.store.reconcile import ReconcileStore
from paysched.reconcile import item_view, parse_period, view

router = APIRouter(prefix="/v1/reconciliations", tags=["reconciliations"])


def _reports(request: Request) -> ReconcileStore:
    return ReconcileStore(paysched(request).store.engine)


@router.post(
    "",
    status_code=202,
    response_model=Reconciliation,
    operation_id="createReconciliation",
    responses=problems(),
)
async def create_reconciliation(
    body: ReconciliationCreate,
    request: Request,
    caller: ApiKey = Admin,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Compare paysched's occurrences, the provider's charges and the ledger over a period
    (admin keys only: it reads everything, asks the provider for its whole listing and, with
    `resolve`, settles unknown occurrences). Answers 202 with the report `running`; follow it
    with getReconciliation until it is `done` (or `failed`)."""
    app = paysched(request)
    period = parse_period(body.from_, body.to)
    return await once(
        request,
        caller,
        idempotency_key,
        202,
        lambda then: app.start_reconciliation(
            period.start,
            period.end,
            actor=Actor.of_key(caller, "api"),
            resolve=body.resolve,
            then=then,
        ),
        view,
    )


@router.get(
    "",
    response_model=Page[Reconciliation],
    operation_id="listReconciliations",
    responses=problems(),
)
async def list_reconciliations(
    request: Request,
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """Reconciliation reports, newest first."""
    before = pages.decode(cursor, pages.is_id)
    rows = await paysched(request).db(_reports(request).latest, limit + 1, before)
    return pages.page(rows, limit, pages.each(view), lambda r: r.id)


@router.get(
    "/{reconciliation_id}",
    response_model=ReconciliationDetail,
    operation_id="getReconciliation",
    responses=problems(404),
)
async def get_reconciliation(
    reconciliation_id: Id,
    request: Request,
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """A report with one page of its discrepancies (in the order they were found)."""
    app = paysched(request)
    reports = _reports(request)
    report = await app.db(reports.get, reconciliation_id)
    after = pages.decode(cursor, pages.is_id) or 0
    items = await app.db(reports.items, reconciliation_id, after, limit + 1)
    shown = pages.page(items, limit, pages.each(item_view), lambda i: i.id)
    return view(report) | {
        "items": shown["data"],
        "has_more": shown["has_more"],
        "next_cursor": shown["next_cursor"],
    }
