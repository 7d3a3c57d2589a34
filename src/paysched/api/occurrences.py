"""/v1/occurrences: one execution of a payment. Get by id or key, list by state / payment /
due range, resolve an unknown or needs_review one by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from paysched.actors import Actor
from paysched.api import pages
from paysched.api.deps import paysched, problems
from paysched.api.idempotent import IdempotencyKey, once
from paysched.api.models import Approve, Id, Occurrence, Page, Reject, Resolve, Resolved
from paysched.api.security import Admin, Read
from paysched.api.security import Approve as MayApprove
from paysched.cursors import is_occurrence_position, occurrence_after, occurrence_position
from paysched.db.apikeys import ApiKey
from paysched.domain import MAX_ID, OccurrenceState
from paysched.domain import Occurrence as OccurrenceRow
from paysched.errors import InvalidInput
from paysched.schedules import parse_instant
from paysched.views import occurrence_view

router = APIRouter(prefix="/v1/occurrences", tags=["occurrences"])
DATE_TIME: dict[str, Any] = {"format": "date-time"}
Ref = Path(
    min_length=1,
    max_length=80,
    pattern=r"^[\x21-\x7e]+$",
    description="The occurrence's id, or its key (e.g. pay-12-1764576000000).",
)


def _state(value: str | None) -> OccurrenceState | None:
    if value is None:
        return None
    try:
        return OccurrenceState(value)
    except ValueError:
        states = ", ".join(s.value for s in OccurrenceState)
        raise InvalidInput("state", f"expected one of {states}, got {value!r}") from None


def _instant(value: str | None, field: str) -> datetime | None:
    return None if value is None else parse_instant(value, field)


def _summary(occ: OccurrenceRow) -> dict[str, Any]:
    return occurrence_view(occ, [])


@router.get(
    "", response_model=Page[Occurrence], operation_id="listOccurrences", responses=problems()
)
async def list_occurrences(
    request: Request,
    state: str | None = Query(None, description="scheduled, queued, executing, ..."),
    payment_id: Id | None = Query(None, ge=1, le=MAX_ID, description="Only this payment's."),
    due_from: str | None = Query(
        None, max_length=40, description="Due at or after (RFC 3339).", json_schema_extra=DATE_TIME
    ),
    due_before: str | None = Query(
        None, max_length=40, description="Due before (RFC 3339).", json_schema_extra=DATE_TIME
    ),
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """Occurrences, earliest due first. List entries leave out `attempts` and `history`
    (empty lists); get one occurrence for them."""
    app = paysched(request)
    after = occurrence_after(pages.decode(cursor, is_occurrence_position))
    rows = await app.db(
        app.store.reads.list_occurrences,
        limit + 1,
        after=after,
        state=_state(state),
        payment_id=payment_id,
        due_from=_instant(due_from, "due_from"),
        due_before=_instant(due_before, "due_before"),
    )
    return pages.page(rows, limit, pages.each(_summary), occurrence_position)


@router.get(
    "/{ref}", response_model=Occurrence, operation_id="getOccurrence", responses=problems(404)
)
async def get_occurrence(request: Request, ref: str = Ref, _: ApiKey = Read) -> dict[str, Any]:
    """One occurrence with every attempt and its full history."""
    return await paysched(request).occurrence_detail(ref)


@router.post(
    "/{ref}/resolve",
    response_model=Resolved,
    operation_id="resolveOccurrence",
    responses=problems(404, 409),
)
async def resolve_occurrence(
    body: Resolve,
    request: Request,
    ref: str = Ref,
    caller: ApiKey = Admin,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Settle an unknown or needs_review occurrence by hand (admin keys only): `succeeded` or
    `failed` is what the provider says happened; `retry` sends it again with the same key."""
    app = paysched(request)
    actor = Actor.of_key(caller, "api")
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.resolve_occurrence(ref, body.outcome, body.reason, then, actor=actor),
        lambda state: {"occurrence": ref, "state": state.value},
    )


@router.post(
    "/{ref}/approve",
    response_model=Resolved,
    operation_id="approveOccurrence",
    responses=problems(404, 409),
)
async def approve_occurrence(
    request: Request,
    body: Approve | None = None,
    ref: str = Ref,
    caller: ApiKey = MayApprove,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Approve an occurrence awaiting approval (keys of scope approve or admin): it runs at
    its due time. 409 if it awaits no approval any more (already decided, timed out) or if
    this key created its payment (four eyes)."""
    app = paysched(request)
    actor = Actor.of_key(caller, "api")
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.decide_occurrence(ref, True, "", then, actor=actor),
        _decided,
    )


@router.post(
    "/{ref}/reject",
    response_model=Resolved,
    operation_id="rejectOccurrence",
    responses=problems(404, 409),
)
async def reject_occurrence(
    body: Reject,
    request: Request,
    ref: str = Ref,
    caller: ApiKey = MayApprove,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Reject an occurrence awaiting approval: it is cancelled with `reason` and never runs.
    409 as for approve."""
    app = paysched(request)
    actor = Actor.of_key(caller, "api")
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.decide_occurrence(ref, False, body.reason, then, actor=actor),
        _decided,
    )


def _decided(result: Any) -> dict[str, Any]:
    """The answer to a decision: from the occurrence (App's result) or the store's Decided
    (what an Idempotency-Key's hook is given, in the transaction)."""
    occ = getattr(result, "occurrence", result)
    return {"occurrence": occ.key, "state": occ.state.value}
