"""/v1/actions: the whole audit log, every action a person took (a payment's, and those tied to
no payment: an account created or funded, an API key created or revoked), filtered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from paysched import reads
from paysched.api import pages
from paysched.api.deps import paysched, problems
from paysched.api.models import LoggedAction, Page
from paysched.api.security import Read
from paysched.audit import action_filter
from paysched.db.actions import ACTIONS, logged_view
from paysched.db.apikeys import ApiKey

router = APIRouter(prefix="/v1/actions", tags=["actions"])


@router.get("", response_model=Page[LoggedAction], operation_id="listActions", responses=problems())
async def list_actions(
    request: Request,
    actor: str | None = Query(
        None, max_length=20, description="An API key's id (`3` or `#3`), `cli` or `python`."
    ),
    action: str | None = Query(None, max_length=40, description=", ".join(ACTIONS) + "."),
    payment_id: str | None = Query(
        None, max_length=20, description="Done to this payment (`12` or `#12`)."
    ),
    since: str | None = Query(
        None,
        max_length=40,
        description="At or after this (RFC 3339, or a date: its midnight UTC).",
    ),
    before: str | None = Query(None, max_length=40, description="Before this (as `since`)."),
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """What people did, newest first: who (the API key's id and name, or the command line's
    user), when, through what, to which payment (if any). Every filter given must hold."""
    found = action_filter(
        actor=actor, action=action, payment_id=payment_id, since=since, before=before
    )
    app = paysched(request)
    position = pages.decode(cursor, pages.is_id)
    rows = await app.read(reads.actions, found, limit + 1, position)
    return pages.page(rows, limit, pages.each(logged_view), lambda a: a.id)
