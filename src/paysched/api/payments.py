"""/v1/payments: create (one-time or recurring), list with filters, get with occurrences,
cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from paysched.api import pages
from paysched.api.deps import links, paysched, problems
from paysched.api.idempotent import IdempotencyKey, once
from paysched.api.models import Cancelled, Page, Payment, PaymentCreate, PaymentDetail
from paysched.api.security import Read, Write
from paysched.app import App
from paysched.db.apikeys import ApiKey
from paysched.db.store import CancelResult
from paysched.domain import PaymentState, normalise_name, parse_currency, parse_positive_amount
from paysched.errors import InvalidInput
from paysched.notify.targets import normalise_targets
from paysched.schedules import parse_duration, parse_instant, parse_timezone, validate_cron
from paysched.views import payment_view

router = APIRouter(prefix="/v1/payments", tags=["payments"])


def schedule_fields(app: App, body: PaymentCreate) -> dict[str, Any]:
    """The store's fields for a new payment, every value checked (the CLI's `schedule` rules)."""
    given = [n for n, v in (("at", body.at), ("in", body.in_), ("cron", body.cron)) if v]
    if len(given) != 1:
        raise InvalidInput("schedule", "give exactly one of at, in or cron")
    if body.timezone and not body.cron:
        raise InvalidInput("timezone", "applies to cron schedules")
    code = parse_currency(body.currency)
    now = app.clock.now()
    due_at = None
    if body.at is not None:
        due_at = parse_instant(body.at, "at")
        if due_at < now and not body.allow_past:
            raise InvalidInput("at", f"{body.at} is in the past; set allow_past to run it at once")
    if body.in_:
        due_at = now + parse_duration(body.in_, "in")
    if body.timezone:
        parse_timezone(body.timezone, "timezone")
    if body.cron:
        validate_cron(body.cron, "cron")
    return dict(
        payer=normalise_name(body.payer, "from"), payee=normalise_name(body.payee, "to"),
        amount=parse_positive_amount(body.amount, code), currency=code, due_at=due_at,
        cron=body.cron, timezone=body.timezone, memo=body.memo,
        notify=normalise_targets(body.notify, "notify", app.settings.webhook_allow_private),
    )  # fmt: skip


@router.post(
    "", status_code=201, response_model=Payment, operation_id="createPayment",
    responses=problems() | links(
        201, payment=("getPayment", {"payment_id": "$response.body#/id"}),
        cancel=("cancelPayment", {"payment_id": "$response.body#/id"}),
    ),
)  # fmt: skip
async def create_payment(
    body: PaymentCreate, request: Request, caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:  # fmt: skip
    """Schedule a payment. Whatever of it falls due within the scheduler's look-ahead is
    queued at once."""
    app = paysched(request)
    fields = schedule_fields(app, body)
    return await once(
        request, caller, idempotency_key, 201,
        lambda then: app.create_payment(**fields, then=then), payment_view,
    )  # fmt: skip


def _state(value: str | None) -> str | None:
    if value is not None and value not in {s.value for s in PaymentState}:
        raise InvalidInput("state", f"expected active, done or cancelled, got {value!r}")
    return value


@router.get("", response_model=Page[Payment], operation_id="listPayments", responses=problems())
async def list_payments(
    request: Request,
    state: str | None = Query(None, description="active, done or cancelled."),
    payer: str | None = Query(None, alias="from", max_length=100, description="Paying account."),
    payee: str | None = Query(None, alias="to", max_length=100, description="Receiving account."),
    currency: str | None = Query(None, pattern=r"^[A-Za-z]{3}$"),
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """Payments, newest first."""
    app = paysched(request)
    before = pages.decode(cursor, pages.is_id)
    rows = await app.db(
        app.store.list_payments, limit + 1, _state(state), before_id=before,
        payer=normalise_name(payer, "from") if payer is not None else None,
        payee=normalise_name(payee, "to") if payee is not None else None,
        currency=parse_currency(currency) if currency else None,
    )  # fmt: skip
    return pages.page(rows, limit, payment_view, lambda p: p.id)


@router.get(
    "/{payment_id}",
    response_model=PaymentDetail,
    operation_id="getPayment",
    responses=problems(404)
    | links(200, occurrence=("getOccurrence", {"ref": "$response.body#/occurrences/0/key"})),
)
async def get_payment(payment_id: int, request: Request, _: ApiKey = Read) -> dict[str, Any]:
    """A payment, its occurrences with every attempt and transition, and its notifications."""
    return await paysched(request).payment_detail(payment_id)


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
    payment_id: int, request: Request, caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:  # fmt: skip
    """Cancel: nothing of it that has not started will execute. Occurrences executing now
    finish and are reported in `in_flight`. 409 if already cancelled or nothing is left."""
    app = paysched(request)
    return await once(
        request, caller, idempotency_key, 200,
        lambda then: app.cancel_payment(payment_id, then=then), cancelled_view,
    )  # fmt: skip
