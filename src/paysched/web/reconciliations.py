"""The dashboard's reconciliation reports: the latest ones with their counts, and one report
with its discrepancies, a page at a time (see paysched.reconcile)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from paysched.api.pages import decode, encode, is_id
from paysched.app import App
from paysched.db.apikeys import ApiKey
from paysched.db.store.reconcile import ReconcileStore
from paysched.domain import parse_id
from paysched.reconcile import KINDS, item_line, summary, view
from paysched.web import auth
from paysched.web.render import page

router = APIRouter()
Read = Depends(auth.signed_in("read"))
LATEST = 30
ITEMS = 50


def _reports(request: Request) -> tuple[App, ReconcileStore]:
    app: App = request.app.state.paysched
    return app, ReconcileStore(app.store.engine)


@router.get("/reconciliations", response_class=HTMLResponse)
async def reconciliations(request: Request, _: ApiKey = Read) -> Response:
    app, reports = _reports(request)
    latest = await app.db(reports.latest, LATEST)
    rows = [view(r) | {"found": {k: r.counts.get(k, 0) for k in KINDS}} for r in latest]
    return page(request, "reconciliations.html", rows=rows, kinds=KINDS)


@router.get("/reconciliations/{reconciliation_id}", response_class=HTMLResponse)
async def reconciliation(
    request: Request,
    reconciliation_id: str,
    cursor: str | None = Query(None, max_length=200),
    _: ApiKey = Read,
) -> Response:
    app, reports = _reports(request)
    rid = parse_id(reconciliation_id, "reconciliation id")
    report = await app.db(reports.get, rid)
    after = decode(cursor, is_id) or 0
    items = await app.db(reports.items, rid, after, ITEMS + 1)
    more = len(items) > ITEMS
    items = items[:ITEMS]
    next_url = f"{auth.PATH}/reconciliations/{rid}?cursor={encode(items[-1].id)}" if more else None
    return page(
        request,
        "reconciliation.html",
        report=view(report),
        summary=summary(report),
        kinds=KINDS,
        items=[(i, item_line(i)) for i in items],
        next_url=next_url,
    )
