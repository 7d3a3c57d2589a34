"""/v1/accounts: create, list, get, change (its reminder default, its approval rule),
deposit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from paysched.actors import Actor
from paysched.api import pages
from paysched.api.deps import links, paysched, problems
from paysched.api.idempotent import IdempotencyKey, once
from paysched.api.models import Account, AccountChange, AccountCreate, Deposit, Page
from paysched.api.security import Read, Write
from paysched.db.apikeys import ApiKey
from paysched.domain import normalise_name, parse_currency, parse_positive_amount, refuse_external
from paysched.inputs import parse_remind
from paysched.views import account_view

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.post(
    "",
    status_code=201,
    response_model=Account,
    operation_id="createAccount",
    responses=problems(409)
    | links(
        201,
        account=("getAccount", {"name": "$response.body#/name"}),
        deposit=("deposit", {"name": "$response.body#/name"}),
    ),
)
async def create_account(
    body: AccountCreate,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Create an account with a zero balance."""
    app = paysched(request)
    code = parse_currency(body.currency)
    remind = None if body.remind is None else parse_remind(body.remind)
    return await once(
        request,
        caller,
        idempotency_key,
        201,
        lambda then: app.create_account(
            body.name, code, then, actor=Actor.of_key(caller, "api"), remind=remind
        ),
        account_view,
    )


@router.patch(
    "/{name}", response_model=Account, operation_id="changeAccount", responses=problems(404)
)
async def change_account(
    name: str, body: AccountChange, request: Request, caller: ApiKey = Write
) -> dict[str, Any]:
    """Change an account's settings for the payments created from now on (those it pays
    keep their own): its reminder default (`remind`, null: off) and its approval rule
    (`approval_above`, null: off). Only the fields given change."""
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    account = await paysched(request).change_account(
        normalise_name(name), changes, actor=Actor.of_key(caller, "api")
    )
    return account_view(account)


@router.get("", response_model=Page[Account], operation_id="listAccounts", responses=problems())
async def list_accounts(
    request: Request,
    limit: int = pages.Limit,
    cursor: str | None = pages.Cursor,
    _: ApiKey = Read,
) -> dict[str, Any]:
    """Accounts by name."""
    app = paysched(request)
    after = pages.decode(cursor, pages.is_name)
    rows = await app.db(app.store.accounts.list_accounts, limit + 1, after)
    return pages.page(rows, limit, pages.each(account_view), lambda a: a.name)


@router.get("/{name}", response_model=Account, operation_id="getAccount", responses=problems(404))
async def get_account(name: str, request: Request, _: ApiKey = Read) -> dict[str, Any]:
    """An account and its balance."""
    app = paysched(request)
    return account_view(await app.db(app.store.accounts.get_account, normalise_name(name)))


@router.post(
    "/{name}/deposits",
    response_model=Account,
    operation_id="deposit",
    responses=problems(404, 409),
)
async def deposit(
    name: str,
    body: Deposit,
    request: Request,
    caller: ApiKey = Write,
    idempotency_key: str | None = IdempotencyKey,
) -> JSONResponse:
    """Add money to an account; answers the account with its new balance."""
    app = paysched(request)
    name = normalise_name(name)
    refuse_external(name)
    account = await app.db(app.store.accounts.get_account, name)
    minor = parse_positive_amount(body.amount, account.currency)
    return await once(
        request,
        caller,
        idempotency_key,
        200,
        lambda then: app.deposit(name, minor, then, actor=Actor.of_key(caller, "api")),
        account_view,
    )
