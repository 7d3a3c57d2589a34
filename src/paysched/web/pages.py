"""The dashboard's routes: login/logout, overview, the payment list, a payment's detail, an
account, actions, live events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from paysched import reads
from paysched.actors import Actor
from paysched.api.pages import decode
from paysched.api.problems import from_paysched
from paysched.app import App
from paysched.audit import action_filter
from paysched.cursors import is_id, is_occurrence_position, occurrence_after
from paysched.db.actions import ACTIONS as ACTIONS_LOGGED
from paysched.db.apikeys import ApiKey
from paysched.db.sessions import DashboardSessions
from paysched.db.store.approvals import timeout_text
from paysched.domain import parse_id
from paysched.errors import InvalidInput, NotFound, PayschedError
from paysched.finding import payment_filter
from paysched.views import account_view
from paysched.web import auth, live
from paysched.web.data import (
    ACTION_FILTERS,
    FILTERS,
    account_page,
    action_list,
    activity_chart,
    overview,
    payment_list,
    payment_page,
)
from paysched.web.render import error_page, is_htmx, page, render

router = APIRouter()
Read = Depends(auth.signed_in("read"))
Write = Depends(auth.signed_in("write"))
Admin = Depends(auth.signed_in("admin"))
Approve = Depends(auth.signed_in("approve"))
HOME = f"{auth.PATH}/"


def _app(request: Request) -> App:
    app: App = request.app.state.paysched
    return app


# -- signing in --------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    """The sign-in form; sent here because a session ended, it says why."""
    why = auth.told_ended(request)
    notice = None if why is None else ended_notice(why, request.app.state.sessions)
    response = page(request, "login.html", error=None, notice=notice)
    if auth.ENDED_COOKIE in request.cookies:  # told once
        auth.clear_cookie(request, response, auth.ENDED_COOKIE)
    return response


def ended_notice(why: str, sessions: DashboardSessions) -> str:
    if why == "idle":
        return f"You were signed out after {_span(sessions.idle)} without a request. Sign in again."
    if why == "lifetime":
        return (
            f"Your session reached its limit of {_span(sessions.lifetime)} since "
            "signing in. Sign in again."
        )
    if why == "revoked":
        return "The API key you signed in with was revoked. Sign in with another key."
    return "Your session has ended (signed out here or elsewhere). Sign in again."


def _span(value: timedelta) -> str:
    return timeout_text(int(value.total_seconds()))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    auth.check_csrf(request)
    key = await auth.form_field(request, "key")
    found = await auth.verify(request.app.state.guard, key) if key else None
    if found is None:
        return page(
            request, "login.html", 401, error="that API key is unknown or revoked", notice=None
        )
    response = RedirectResponse(HOME, status_code=303)
    await auth.sign_in(request, response, found)
    return response


@router.get("/logout")
async def logout(request: Request) -> Response:
    # A GET is enough: the SameSite=Strict cookie never comes with another site's link, so
    # no other site can end a session (and ending one is all this can do).
    response = RedirectResponse(auth.LOGIN, status_code=303)
    await auth.sign_out(request, response)
    return response


@router.get("/session", status_code=204)
async def session(_: ApiKey = Read) -> Response:
    """204 while signed in, else 401: what a page asks when its live stream fails (an
    EventSource never shows a response's status) to know whether to go to sign-in."""
    return Response(status_code=204)


# -- reading -----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, _: ApiKey = Read) -> Response:
    if any(name in request.query_params for name in FILTERS):
        # /dashboard/?state=failed was silently the overview: a filter is the list's.
        return RedirectResponse(f"{auth.PATH}/payments?{request.url.query}", status_code=303)
    app = _app(request)
    return page(request, "overview.html", **await overview(app), **await activity_chart(app))


@router.get("/chart", response_class=HTMLResponse)
async def chart(request: Request, _: ApiKey = Read) -> Response:
    """The overview's chart alone, for its refresh every 30 s."""
    return page(request, "_chart.html", **await activity_chart(_app(request)))


@router.get("/events")
async def events(request: Request, _: ApiKey = Read) -> StreamingResponse:
    state = request.app.state
    body = live.stream(state.live, auth.still_signed_in(request), state.stopping)
    return _event_stream(body)


def _event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    # no-store: never cached; X-Accel-Buffering: a proxy (nginx) passes each event on at once.
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/payments/{payment_id}/events")
async def payment_events(
    request: Request,
    payment_id: str,
    cursor: str | None = Query(None, max_length=200),
    key: ApiKey = Read,
) -> StreamingResponse:
    """The payment's detail, live (see live.payment_stream). A bad id, cursor or an unknown
    payment is refused here, before the stream starts."""
    pid = parse_id(payment_id, "payment id")
    before = occurrence_after(decode(cursor, is_occurrence_position))
    app = _app(request)
    # NotFound: a 404, not a stream that never speaks.
    await app.read(reads.payment_detail, pid, reads.DETAIL_PAGE, before)

    async def detail() -> str:  # the page's own detail (_detail_page), alone
        shown = await payment_page(app, pid, before)
        return render("_payment.html", cursor=cursor, scope=key.scope, **shown)

    body = live.payment_stream(
        app, pid, detail, auth.still_signed_in(request), request.app.state.stopping
    )
    return _event_stream(body)


def _position(value: str | None, field: str) -> int | None:
    """A page position of the list (a payment or entry id, as the page's own links carry)."""
    return None if value is None or value == "" else parse_id(value, field)


@router.get("/payments", response_class=HTMLResponse)
async def payments(request: Request, _: ApiKey = Read) -> HTMLResponse:
    """Every payment, newest first, found by `q` and filtered as GET /v1/payments is (the same
    read). The fields are read here rather than declared: a bad one is a 400 page that names it
    above the form as the operator filled it, not a bare validation error."""
    params = request.query_params
    form = {name: params.get(name, "") for name in FILTERS}
    try:
        found = payment_filter(**form)
        before = _position(params.get("before"), "before")
        after = _position(params.get("after"), "after")
    except InvalidInput as exc:
        return page(
            request, "payments.html", 400, form=form, found=None, error=exc.problem, field=exc.field
        )
    listed = await payment_list(_app(request), found, form, before, after)
    return page(request, "payments.html", form=form, found=listed, error=None, field=None)


@router.get("/actions", response_class=HTMLResponse)
async def action_log(
    request: Request, cursor: str | None = Query(None, max_length=200), _: ApiKey = Read
) -> HTMLResponse:
    """What people did, newest first, filtered as GET /v1/actions is (the same read); a bad
    filter is a 400 page naming it above the form, as the payment list's."""
    params = request.query_params
    form = {name: params.get(name, "") for name in ACTION_FILTERS}
    try:
        found = action_filter(**form)
    except InvalidInput as exc:
        return page(
            request,
            "actions.html",
            400,
            form=form,
            names=ACTIONS_LOGGED,
            found=None,
            error=exc.problem,
            field=exc.field,
        )
    listed = await action_list(_app(request), found, form, decode(cursor, is_id))
    return page(
        request,
        "actions.html",
        form=form,
        names=ACTIONS_LOGGED,
        found=listed,
        error=None,
        field=None,
    )


@router.get("/accounts/{name:path}", response_class=HTMLResponse)  # an old name may hold /
async def account(
    request: Request,
    name: str,
    before: str | None = Query(None, max_length=20),
    _: ApiKey = Read,
) -> HTMLResponse:
    """An account: balance, ledger entries (paged, newest first), its latest payments."""
    try:
        position = _position(before, "before")
    except InvalidInput as exc:  # as the list's: a bad position is a 400 naming it
        return error_page(request, 400, str(exc))
    data = await account_page(_app(request), name, position)
    return page(request, "account.html", **data)


async def _detail_page(
    request: Request,
    payment_id: int,
    status: int = 200,
    flash: tuple[bool, str] | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    """The payment with its newest occurrences, or those older than `cursor` (the API's
    cursor: a bad one is a 422 page naming it)."""
    before = occurrence_after(decode(cursor, is_occurrence_position))
    app = _app(request)
    shown = await payment_page(app, payment_id, before)
    return page(request, "payment.html", status, flash=flash, cursor=cursor, **shown)


@router.get("/payments/{payment_id}", response_class=HTMLResponse)
async def payment(
    request: Request,
    payment_id: str,
    cursor: str | None = Query(None, max_length=200),
    _: ApiKey = Read,
) -> HTMLResponse:
    # Taken as text and parsed by the CLI's rule: a bad id is a 422 page naming it.
    return await _detail_page(request, parse_id(payment_id, "payment id"), cursor=cursor)


# -- acting (write keys) -----------------------------------------------------------------------


def _actor(key: ApiKey) -> Actor:
    """The signed-in key acts: recorded with the change, shown in the payment's timeline."""
    return Actor.of_key(key, "dashboard")


async def _cancel(app: App, pid: int, actor: Actor) -> str:
    result = await app.cancel_payment(pid, actor=actor)
    text = f"Payment #{pid} cancelled: {len(result.cancelled)} occurrence(s) will not run."
    if result.in_flight:
        text += f" {len(result.in_flight)} already executing will finish."
    return text


async def _pause(app: App, pid: int, actor: Actor) -> str:
    held = await app.pause_payment(pid, actor=actor)
    return f"Payment #{pid} paused: {len(held.occurrences)} occurrence(s) held."


async def _resume(app: App, pid: int, actor: Actor) -> str:
    held = await app.resume_payment(pid, actor=actor)
    return (
        f"Payment #{pid} resumed: {len(held.occurrences)} occurrence(s) released, "
        f"{len(held.missed)} missed."
    )


ACTIONS: dict[str, Callable[[App, int, Actor], Awaitable[str]]] = {
    "cancel": _cancel,
    "pause": _pause,
    "resume": _resume,
}


@router.post("/payments/{payment_id}/{action}", response_class=HTMLResponse)
async def act(request: Request, payment_id: str, action: str, key: ApiKey = Write) -> Response:
    """The same App methods as POST /v1/payments/{id}/cancel|pause|resume. A refusal (409) is
    shown with its reason; only an unknown payment or action is an error page."""
    if action not in ACTIONS:
        raise NotFound(f"no action {action!r}; expected one of {', '.join(ACTIONS)}")
    pid = parse_id(payment_id, "payment id")
    return await _answer(request, pid, ACTIONS[action](_app(request), pid, _actor(key)))


@router.post("/accounts/{name:path}/settings", response_class=HTMLResponse)
async def account_settings(request: Request, name: str, key: ApiKey = Write) -> Response:
    """Change an account's reminder default and approval rule, as `paysched accounts set` and
    PATCH /v1/accounts/{name} do; a blank field means off. A bad value is shown with the
    field it names, and nothing is written."""
    app = _app(request)
    changes: dict[str, str | None] = {}
    for field in ("remind", "approval_above"):
        changes[field] = await auth.form_field(request, field) or "off"

    async def change() -> str:
        account = await app.change_account(name, changes, actor=_actor(key))
        view = account_view(account)
        rule = view.get("approval_above")
        above = f"above {rule} {account.currency}" if rule else "off"
        seconds = None if account.remind is None else int(account.remind.total_seconds())
        remind = "off" if seconds is None else f"{timeout_text(seconds)} before"
        return f"Account {account.name}: reminders {remind}, approval {above}."

    return await _answer(request, None, change())


@router.post("/occurrences/{occurrence_id}/resolve", response_class=HTMLResponse)
async def resolve(request: Request, occurrence_id: str, key: ApiKey = Admin) -> Response:
    """Settle an unknown or needs_review occurrence by hand, as `paysched resolve` and
    POST /v1/occurrences/{ref}/resolve do (admin keys only): succeeded, failed or retry, with
    the reason kept in its history."""
    app = _app(request)
    occurrence = await app.find_occurrence(str(parse_id(occurrence_id, "occurrence id")))
    outcome = await auth.form_field(request, "outcome")
    reason = await auth.form_field(request, "reason")

    async def settle() -> str:
        state = await app.resolve_occurrence(str(occurrence.id), outcome, reason, actor=_actor(key))
        return f"Occurrence {occurrence.key} resolved by hand: now {state.value}."

    return await _answer(request, occurrence.payment_id, settle())


@router.post("/occurrences/{occurrence_id}/{decision}", response_class=HTMLResponse)
async def decide(
    request: Request, occurrence_id: str, decision: str, key: ApiKey = Approve
) -> Response:
    """Approve or reject an occurrence awaiting approval, as `paysched approve | reject` and
    POST /v1/occurrences/{ref}/approve | reject do (approve and admin keys; never the key
    that created the payment): rejecting needs a reason."""
    if decision not in ("approve", "reject"):
        raise NotFound(f"no action {decision!r}; expected approve, reject or resolve")
    app = _app(request)
    occurrence = await app.find_occurrence(str(parse_id(occurrence_id, "occurrence id")))
    reason = await auth.form_field(request, "reason") if decision == "reject" else ""

    async def decided() -> str:
        occ = await app.decide_occurrence(
            str(occurrence.id), decision == "approve", reason, actor=_actor(key)
        )
        if decision == "approve":
            return f"Occurrence {occ.key} approved: it runs at its due time."
        return f"Occurrence {occ.key} rejected: it will not run."

    return await _answer(request, occurrence.payment_id, decided())


@router.post("/notifications/{notification_id}/retry", response_class=HTMLResponse)
async def retry(request: Request, notification_id: str, key: ApiKey = Write) -> Response:
    """Send a dead notification again with fresh attempts, as
    POST /v1/notifications/{id}/retry does."""
    app = _app(request)
    nid = parse_id(notification_id, "notification id")
    found = await app.read(reads.notification, nid)

    async def again() -> str:
        await app.retry_notification(nid, actor=_actor(key))
        return f"Notification {nid} ({found.event} to {found.channel}) will be sent again."

    return await _answer(request, found.payment_id, again())


async def _answer(request: Request, pid: int | None, action: Awaitable[str]) -> Response:
    """An action's outcome: the message, or a refusal with its reason and status."""
    try:
        ok, status, message = True, 200, await action
    except NotFound:
        raise
    except PayschedError as exc:
        problem = from_paysched(exc)
        ok, status, message = False, problem.status, problem.detail
    # A notification of no one payment (a reconciliation's) has no detail page to go back to.
    if is_htmx(request) or pid is None:
        # The result goes where the button said; the page's detail reloads itself on the
        # event, after a refusal too: that usually means the page was out of date.
        headers = {"HX-Trigger": "payment-changed"}
        return page(request, "_result.html", status, headers, ok=ok, message=message)
    return await _detail_page(request, pid, status, (ok, message))
