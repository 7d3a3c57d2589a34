"""/v1/payments: create (one-time or recurring), list with filters, get with its newest
occurrences, page through the rest of them, cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from paysched import reads
from paysched.actors import Actor
from paysched.api import pages
from paysched.api.deps import links, paysched, problems
from paysched.api.idempotent import IdempotencyKey, once, once_in_one
from paysched.api.models import (
    Action,
    Cancelled,
    Held,
    Id,
    Occurrence,
    Page,
    Payment,
    PaymentCreate,
    PaymentDetail,
    PaymentRow,
    Skipped,
    Upcoming,
)
from paysched.api.security import Read, Write
from paysched.app import App
from paysched.cursors import is_occurrence_position, occurrence_after, occurrence_position
from paysched.db.actions import views
from paysched.db.apikeys import ApiKey
from paysched.db.store import CancelResult
from paysched.db.store.control import Held as HeldResult
from paysched.domain import Account
from paysched.finding import payment_filter
from paysched.inputs import (
    HTTP_NAMES,
    Calendar,
    payer_currency,
    payment_request,
)
from paysched.views import due_view, iso, occurrence_view, payment_view

router = APIRouter(prefix="/v1/payments", tags=["payments"])


def schedule_fields(
    app: App, body: PaymentCreate, account: Callable[[str], Account]
) -> dict[str, object]:
    """The store's fields for a new payment, checked by the same rules as the CLI's and the
    Python API's (paysched.inputs), with the API's field names in messages. Run on the
    database thread, in the create's transaction (`account` reads there): checking a calendar
    rule expands it (bounded, but CPU all the same), which on the event loop would hold up
    every other request meanwhile."""
    rule = Calendar(
        body.rrule, body.every, body.start, body.count, body.until, body.business_day, body.calendar
    )
    request = payment_request(
        payer=body.payer,
        payee=body.payee,
        amount=body.amount,
        currency=body.currency,
        at=body.at,
        in_=body.in_,
        cron=body.cron,
        tz=body.timezone,
        memo=body.memo,
        notify=body.notify,
        allow_past=body.allow_past,
        allow_private=app.settings.webhook_allow_private,
        now=app.clock.now(),
        names=HTTP_NAMES,
        calendar=rule,
        catchup=body.catchup,
        catchup_window=body.catchup_window,
        remind=body.remind,
        approval=body.approval,
        approval_timeout=body.approval_timeout,
        on_timeout=body.on_timeout,
    )
    if request.currency is None:
        request = request.in_currency(payer_currency(account, body.payer, HTTP_NAMES))
    return request.fields()


@router.post(
    "",
    status_code=201,
    response_model=Payment,
    operation_id="createPayment",
    responses=problems()
    | links(
        201,
        payment=("getPayment", {"payment_id": "$response.body#/id"}),
        cancel=("cancelPayment", {"payment_id": "$response.body#/id"}),
    ),
)
async def create_payment(
    body: PaymentCreate,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Schedule a payment. Whatever of it falls due within the scheduler's look-ahead is
    queued at once."""
    app = paysched(request)
    return await once_in_one(
        request,
        caller,
        idempotency_key,
        201,
        lambda first, then: app.create_payment_from(
            lambda account: schedule_fields(app, body, account),
            first=first,
            then=then,
            actor=Actor.of_key(caller, "api"),
        ),
        payment_view,
    )


@router.get("", response_model=Page[PaymentRow], operation_id="listPayments", responses=problems())
async def list_payments(
    request: Request,
    q: str | None = Query(
        None,
        max_length=200,
        description="Search: a payment id (`123` or `#123`), an occurrence key (`pay-…`), a "
        "provider reference, an account name (payer or payee), or else text of the memo "
        "(any case). The first of these that names something is used.",
    ),
    state: str | None = Query(None, description="active, paused, done or cancelled."),
    status: str | None = Query(
        None,
        description="What became of it, as `status` reports it: scheduled, pending, "
        "paused, cancelled, succeeded, failed, missed or skipped.",
    ),
    occurrence: str | None = Query(
        None,
        description="Has an occurrence in this state (scheduled, queued, executing, "
        "retrying, unknown, needs_review, succeeded, failed, cancelled, skipped, missed).",
    ),
    account: str | None = Query(None, max_length=100, description="Payer or payee."),
    payer: str | None = Query(None, alias="from", max_length=100, description="Paying account."),
    payee: str | None = Query(None, alias="to", max_length=100, description="Receiving account."),
    currency: str | None = Query(None, pattern=r"^[A-Za-z]{3}$"),
    due_from: str | None = Query(
        None,
        max_length=40,
        description="Has an occurrence due at or after this (RFC 3339, or a date: its "
        "midnight UTC).",
    ),
    due_before: str | None = Query(
        None, max_length=40, description="Has an occurrence due before this (as `due_from`)."
    ),
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """Payments, newest first, found by `q` and filtered (every filter given must hold).

    Each page reads by index. Memo text, `status`, a final `occurrence` state and a due range
    are checked a stretch of 5,000 payment ids at a time: such a page holds what matched in
    its stretch, so it may be short or even empty while `has_more` is true; follow
    `next_cursor` to search older payments."""
    app = paysched(request)
    before = pages.decode(cursor, pages.is_id)
    found = payment_filter(
        q=q,
        state=state,
        status=status,
        occurrence=occurrence,
        account=account,
        payer=payer,
        payee=payee,
        currency=currency,
        due_from=due_from,
        due_before=due_before,
    )
    answer = await app.read(reads.find_payments, found, limit, before, now=app.clock.now())
    more = answer["older"]
    return {
        "data": answer["data"],
        "has_more": more is not None,
        "next_cursor": None if more is None else pages.encode(more),
    }


@router.get(
    "/{payment_id}",
    response_model=PaymentDetail,
    operation_id="getPayment",
    responses=problems(404)
    | links(
        200,
        occurrence=("getOccurrence", {"ref": "$response.body#/occurrences/0/key"}),
        olderOccurrences=(
            "listPaymentOccurrences",
            {
                "payment_id": "$response.body#/id",
                "cursor": "$response.body#/occurrences_next_cursor",
            },
        ),
    ),
)
async def get_payment(payment_id: Id, request: Request, _: ApiKey = Read) -> dict[str, Any]:
    """A payment, its newest occurrences (up to 20, in due order) with every attempt and
    transition, and its notifications. Older occurrences: `occurrences_next` (or
    GET /v1/payments/{id}/occurrences with `cursor` = `occurrences_next_cursor`)."""
    view = await paysched(request).read(reads.payment_detail, payment_id, reads.DETAIL_PAGE)
    # In due order, as this answer always listed them: a payment of up to 20 occurrences
    # reads exactly as before the page existed; a longer one shows its latest 20.
    view["occurrences"].reverse()
    cursor = view["occurrences_next_cursor"]
    view["occurrences_next"] = (
        None
        if cursor is None
        else f"/v1/payments/{payment_id}/occurrences?{urlencode({'cursor': cursor})}"
    )
    return view


@router.get(
    "/{payment_id}/occurrences",
    response_model=Page[Occurrence],
    operation_id="listPaymentOccurrences",
    responses=problems(404),
)
async def list_payment_occurrences(
    payment_id: Id,
    request: Request,
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """A payment's occurrences, newest first, each with every attempt and transition: the
    pages after the ones its detail shows. A page costs the same few statements however long
    the payment's history (keyset on due time and id)."""
    app = paysched(request)
    before = occurrence_after(pages.decode(cursor, is_occurrence_position))
    found = await app.db(app.store.reads.payment_occurrences, payment_id, limit + 1, before)
    return pages.page(
        found.occurrences,
        limit,
        pages.each(lambda o: occurrence_view(o, found.transitions[o.id])),
        occurrence_position,
    )


@router.get(
    "/{payment_id}/actions",
    response_model=Page[Action],
    operation_id="listPaymentActions",
    responses=problems(404),
)
async def list_payment_actions(
    payment_id: Id,
    request: Request,
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """What people did to the payment, newest first: who (the API key's id and name, or the
    command line's user), when, through what (api, dashboard, cli, python)."""
    app = paysched(request)
    before = pages.decode(cursor, pages.is_id)
    found = await app.read(reads.payment_actions, payment_id, limit + 1, before)
    return pages.page(found, limit, views, lambda a: a.id)


def cancelled_view(result: CancelResult) -> dict[str, Any]:
    return {
        "id": result.payment.id,
        "cancelled_occurrences": [o.key for o in result.cancelled],
        "in_flight": [{"key": o.key, "state": o.state.value} for o in result.in_flight],
    }


@router.post(
    "/{payment_id}/cancel",
    response_model=Cancelled,
    operation_id="cancelPayment",
    responses=problems(404, 409),
)
async def cancel_payment(
    payment_id: Id,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Cancel: nothing of it that has not started will execute. Occurrences executing now
    finish and are reported in `in_flight`. 409 if already cancelled or nothing is left."""
    app = paysched(request)
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.cancel_payment(payment_id, then, actor=Actor.of_key(caller, "api")),
        cancelled_view,
    )


def _held_view(held: HeldResult) -> dict[str, Any]:
    return payment_view(held.payment) | {
        "held": [o.key for o in held.occurrences] if held.payment.state.value == "paused" else [],
        "released": [o.key for o in held.occurrences]
        if held.payment.state.value != "paused"
        else [],
        "missed": [o.key for o in held.missed],
    }


@router.post(
    "/{payment_id}/pause",
    response_model=Held,
    operation_id="pausePayment",
    responses=problems(404, 409),
)
async def pause_payment(
    payment_id: Id,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Pause: nothing of the payment starts until it is resumed (409 unless active)."""
    app = paysched(request)
    actor = Actor.of_key(caller, "api")
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.pause_payment(payment_id, then, actor=actor),
        _held_view,
    )


@router.post(
    "/{payment_id}/resume",
    response_model=Held,
    operation_id="resumePayment",
    responses=problems(404, 409),
)
async def resume_payment(
    payment_id: Id,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Resume a paused payment: what fell due meanwhile runs or is missed by its catch-up
    policy (409 unless paused)."""
    app = paysched(request)
    actor = Actor.of_key(caller, "api")
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.resume_payment(payment_id, then, actor=actor),
        _held_view,
    )


@router.post(
    "/{payment_id}/skip-next",
    response_model=Skipped,
    operation_id="skipNext",
    responses=problems(404, 409),
)
async def skip_next(
    payment_id: Id,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Skip the payment's next occurrence (recorded as skipped; the series goes on)."""
    app = paysched(request)
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.skip_next(payment_id, then, actor=Actor.of_key(caller, "api")),
        lambda occ: {"id": payment_id, "skipped": occ.key, "due_at": iso(occ.due_at)},
    )


@router.get(
    "/{payment_id}/preview",
    response_model=list[Upcoming],
    operation_id="previewPayment",
    responses=problems(404),
)
async def preview_payment(
    payment_id: Id,
    request: Request,
    count: int = Query(12, ge=1, le=1000, description="How many due times."),
    _: ApiKey = Read,
) -> list[dict[str, Any]]:
    """The payment's next due times (after holidays and DST), changing nothing."""
    return [due_view(d) for d in await paysched(request).upcoming(payment_id, count)]
