"""/v1/exports/{kind} (a period's rows as CSV or JSON Lines, streamed) and
/v1/accounts/{name}/statement (an account's month)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from paysched.api.deps import paysched, problems
from paysched.api.models import Statement
from paysched.api.routing import is_head
from paysched.api.security import Read
from paysched.app import App
from paysched.db.apikeys import ApiKey
from paysched.domain import normalise_name
from paysched.exports import (
    MEDIA_TYPES,
    Chunk,
    ExportRequest,
    export_request,
    parse_month,
    read_chunk,
    statement_view,
)

log = logging.getLogger("paysched.api")
router = APIRouter(tags=["exports"])
DATE_OR_TIME = "2027-01-01 (its midnight UTC) or an ISO 8601 instant with its offset"
_BODY = {"schema": {"type": "string"}}
_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": _BODY, "application/x-ndjson": _BODY}}
}


async def _stream(
    app: App, request: ExportRequest, first: Chunk, whole: bool = True
) -> AsyncIterator[bytes]:
    """The pages one after the other, each read and encoded on the database threads: the
    event loop only hands bytes on, and the server's send waits for the client (its flow
    control), so at most a page or two is held however large the period or slow the client.

    A failure after the first page cannot become a problem document (the status is sent):
    the error is logged and raised, and the server cuts the response short, so a client sees
    an incomplete transfer rather than a file that looks whole."""
    chunk = first
    yield chunk.text.encode()
    while whole and chunk.after is not None:
        try:
            chunk = await app.read(read_chunk, request, chunk.after)
        except Exception as exc:
            log.warning("export of %s cut short after id %s: %s", request.kind, chunk.after, exc)
            raise
        yield chunk.text.encode()


@router.get(
    "/v1/exports/{kind}",
    operation_id="export",
    response_class=StreamingResponse,
    responses=_STREAMED | problems(),
)
async def export(
    request: Request,
    kind: Literal["payments", "occurrences", "ledger"] = Path(
        description="payments (by created_at), occurrences (by due_at) or ledger entries "
        "(by created_at)."
    ),
    fmt: Literal["csv", "jsonl"] = Query("csv", alias="format"),
    start: str = Query(
        alias="from",
        max_length=40,
        examples=["2027-01-01"],
        description=f"Inclusive: {DATE_OR_TIME}.",
    ),
    end: str = Query(
        alias="to",
        max_length=40,
        examples=["2027-02-01"],
        description=f"Exclusive: {DATE_OR_TIME}.",
    ),
    _: ApiKey = Read,
) -> StreamingResponse:
    """A period's rows, streamed in constant memory: CSV with a header, or JSON Lines. Amounts
    are decimal strings with the currency in its own column, times ISO 8601 in UTC; see the
    README for the columns. The first page is read before the answer starts, so an
    unavailable database is still a 503."""
    app = paysched(request)
    asked = export_request(kind, fmt, start, end)
    first = await app.read(read_chunk, asked, 0)
    return StreamingResponse(
        # A HEAD gets the headers of the first page's answer, not a whole export read for
        # nothing (HeadAsGet drops the body).
        _stream(app, asked, first, whole=not is_head(request.scope)),
        media_type=MEDIA_TYPES[asked.format],
        headers={
            "Content-Disposition": f'attachment; filename="{asked.filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/v1/accounts/{name}/statement",
    response_model=Statement,
    operation_id="getStatement",
    tags=["accounts"],
    responses=problems(404),
)
async def statement(
    request: Request,
    name: str = Path(min_length=1, max_length=100, examples=["alice"]),
    month: str = Query(max_length=7, pattern=r"^[0-9]{4}-[0-9]{2}$", examples=["2027-01"]),
    _: ApiKey = Read,
) -> dict[str, Any]:
    """An account's month (UTC): opening balance, each entry with the balance after it, and
    the closing balance, from one snapshot of the ledger."""
    app = paysched(request)
    start, end = parse_month(month)
    data = await app.db(app.store.exports.statement, normalise_name(name), start, end)
    return statement_view(data, month)
