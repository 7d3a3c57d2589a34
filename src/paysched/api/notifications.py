"""/v1/notifications: the outbox. List (by state, by payment), send a dead one again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from paysched.actors import Actor
from paysched.api import pages
from paysched.api.deps import links, paysched, problems
from paysched.api.idempotent import IdempotencyKey, once
from paysched.api.models import Id, Notification, Page
from paysched.api.security import Read, Write
from paysched.db.apikeys import ApiKey
from paysched.domain import MAX_ID
from paysched.reads import notifications
from paysched.views import notification_view

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


@router.get(
    "",
    response_model=Page[Notification],
    operation_id="listNotifications",
    responses=problems()
    | links(200, retry=("retryNotification", {"notification_id": "$response.body#/data/0/id"})),
)
async def list_notifications(
    request: Request,
    state: str | None = Query(None, description="pending, sent or dead."),
    payment_id: Id | None = Query(None, ge=1, le=MAX_ID),
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """Notifications, newest first."""
    before = pages.decode(cursor, pages.is_id)
    rows = await paysched(request).read(notifications, state, payment_id, limit + 1, before)
    return pages.page(rows, limit, pages.each(notification_view), lambda n: n.id)


@router.post(
    "/{notification_id}/retry",
    response_model=Notification,
    operation_id="retryNotification",
    responses=problems(404, 409),
)
async def retry_notification(
    notification_id: Id,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Send a dead notification again with a fresh set of attempts (409 unless dead)."""
    app = paysched(request)
    actor = Actor.of_key(caller, "api")
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.retry_notification(notification_id, then, actor=actor),
        notification_view,
    )
