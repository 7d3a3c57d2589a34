"""Commands on payments and their occurrences: schedule, list, show, cancel, pause,
resume, skip, preview, resolve, approve."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from paysched.errors import (
    InvalidInput,
)

if TYPE_CHECKING:
    from paysched.app import App

from paysched.cli.base import (
    NEGATIVE_OK,
    JsonFlag,
    _parse_id,
    cli,
    cli_actor,
    emit,
    handled,
    settings,
    store_of,
    with_app,
)

# -- payments ----------------------------------------------------------------------------------


@cli.command()
@handled
def schedule(
    payer: Annotated[str, typer.Option("--from", help="Paying account.")],
    payee: Annotated[str, typer.Option("--to", help="Receiving account.")],
    amount: Annotated[str, typer.Option(help="Decimal amount, e.g. 12.34.")],
    currency: Annotated[
        str | None, typer.Option(help="ISO 4217 code; default: the paying account's.")
    ] = None,
    at: Annotated[str | None, typer.Option(help="Due time, ISO-8601 with offset.")] = None,
    in_: Annotated[str | None, typer.Option("--in", help="Due after a delay: 30s, 5m, 2h.")] = None,
    cron: Annotated[str | None, typer.Option(help="Recurring: 5-field cron expression.")] = None,
    tz: Annotated[str | None, typer.Option(help="IANA time zone for --cron or a rule.")] = None,
    rrule: Annotated[
        str | None,
        typer.Option(
            help="Recurring by calendar: an RFC 5545 rule, e.g. 'FREQ=MONTHLY;BYMONTHDAY=-1'.",
        ),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(
            help="Recurring every interval from --start: '2 weeks', '1 month', 'year'.",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="A rule's first local date and time of day in --tz, e.g. 2026-12-01T09:00.",
        ),
    ] = None,
    count: Annotated[int | None, typer.Option(help="A rule's number of occurrences.")] = None,
    until: Annotated[str | None, typer.Option(help="A rule's last local date: 2027-12-31.")] = None,
    business_day: Annotated[
        str,
        typer.Option(
            help="Move a rule's dates off weekends and holidays: none, following, "
            "modified_following or preceding.",
        ),
    ] = "none",
    calendar: Annotated[
        str | None,
        typer.Option(
            help="Holidays for --business-day: a country (DE, DE-BY, US-NY) or market (NYSE).",
        ),
    ] = None,
    catchup: Annotated[
        str,
        typer.Option(
            help="Of what fell due while paysched was down or the payment paused, run all, the "
            "latest or none (those are recorded as missed).",
        ),
    ] = "all",
    catchup_window: Annotated[
        str | None,
        typer.Option(
            help="Older than this when found (e.g. 3d): missed, whatever --catchup says.",
        ),
    ] = None,
    remind: Annotated[
        str | None,
        typer.Option(
            help="Remind the payer's linked chats this long before each occurrence (e.g. "
            "24h), with Skip and Pause buttons; default: the payer account's --remind.",
        ),
    ] = None,
    memo: Annotated[str, typer.Option(help="Free text kept with the payment.")] = "",
    notify: Annotated[
        list[str] | None,
        typer.Option(help="telegram:CHAT_ID, webhook:URL or log; repeatable."),
    ] = None,
    allow_past: Annotated[
        bool, typer.Option("--allow-past", help="Accept an --at in the past: run it at once.")
    ] = False,
    approval: Annotated[
        str,
        typer.Option(
            help="required: each occurrence waits until someone other than you approves it "
            "(paysched approve).",
        ),
    ] = "none",
    approval_timeout: Annotated[
        str | None,
        typer.Option(help="Unanswered this long after its due time (e.g. 2h): --on-timeout."),
    ] = None,
    on_timeout: Annotated[
        str | None, typer.Option(help="skip (default) or fail an occurrence unanswered.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Schedule a payment: one-time (--at or --in), recurring by cron (--cron [--tz]) or by
    calendar (--rrule or --every, with --start [--tz] [--count | --until] [--business-day
    --calendar])."""
    from paysched.clock import SystemClock
    from paysched.inputs import (
        CLI_NAMES,
        Calendar,
        check_schedule_choice,
        payer_currency,
        payment_request,
    )
    from paysched.views import payment_view

    rule = Calendar(rrule, every, start, count, until, business_day, calendar)
    # The shape of the request first, then the configuration, then each value (inputs.py:
    # the Python API checks the same things the same way).
    check_schedule_choice(at, in_, cron, tz, CLI_NAMES, rule=rule.given)
    cfg = settings()
    request = payment_request(
        payer=payer,
        payee=payee,
        amount=amount,
        currency=currency,
        at=at,
        in_=in_,
        cron=cron,
        tz=tz,
        memo=memo,
        notify=notify,
        allow_past=allow_past,
        allow_private=cfg.webhook_allow_private,
        now=SystemClock().now(),
        names=CLI_NAMES,
        calendar=rule,
        catchup=catchup,
        catchup_window=catchup_window,
        remind=remind,
        approval=approval,
        approval_timeout=approval_timeout,
        on_timeout=on_timeout,
    )
    if request.currency is None:
        with store_of(migrate=True) as store:
            request = request.in_currency(
                payer_currency(store.accounts.get_account, payer, CLI_NAMES)
            )
    code = request.currency

    async def body(app: App) -> Any:
        return await app.create_payment(actor=cli_actor(), **request.fields())

    payment = with_app(body, cfg=cfg)
    view = payment_view(payment)
    when = view["due_at"] or f"{view['schedule']}, next {view['next_due_at']}"
    emit(
        view,
        as_json,
        f"scheduled payment {payment.id}: {view['amount']} {code} {payer} -> {payee} at {when}",
    )


@cli.command("list")
@handled
def list_cmd(
    state: Annotated[str | None, typer.Option(help="active, paused, done or cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List payments, newest first."""
    from paysched.domain import payment_state_filter
    from paysched.reads import payment_rows
    from paysched.views import marker

    with store_of(migrate=False) as store:
        views = payment_rows(
            store, store.payments.list_payments(limit, payment_state_filter(state))
        )
    lines = [
        f"{v['id']:>6}  {marker(v):<9} {v['amount']:>12} {v['currency']}  {v['from']} -> "
        f"{v['to']}  {v['due_at'] or v['schedule']}"
        for v in views
    ]
    emit(views, as_json, "\n".join(lines) or "no payments")


@cli.command(context_settings=NEGATIVE_OK)
@handled
def show(
    payment_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Show a payment, its occurrences and every attempt."""
    from paysched.reads import payment_detail

    pid = _parse_id(payment_id)
    with store_of(migrate=False) as store:
        view = payment_detail(store, pid)
    lines = [
        f"payment {view['id']} [{view['status']}] {view['amount']} {view['currency']} "
        f"{view['from']} -> {view['to']}"
    ]
    for occ in view["occurrences"]:
        late = "" if occ["lateness_ms"] is None else f", started {occ['lateness_ms']} ms late"
        why = f"  ({occ['reason']})" if occ["reason"] else ""
        lines.append(f"  {occ['due_at']}  {occ['state']}{late}{why}")
        for att in occ["attempts"]:
            detail = f" - {att['reason']}" if att["reason"] else ""
            outcome = att["outcome"] or "running"
            lines.append(f"    attempt {att['number']}: {outcome} at {att['started_at']}{detail}")
    lines.append(f"  notify: {', '.join(view['notify']) or 'default'}")
    for n in view["notifications"]:
        err = f" ({n['last_error']})" if n["last_error"] else ""
        lines.append(f"    {n['event']} -> {n['channel']}:{n['target']} {n['state']}{err}")
    if view["actions"]:
        lines.append("  actions (newest first):")
    for act in view["actions"]:
        why = f" ({act['detail']['reason']})" if "reason" in act["detail"] else ""
        lines.append(f"    {act['at']}  {act['summary']}{why}")
    emit(view, as_json, "\n".join(lines))


@cli.command(context_settings=NEGATIVE_OK)
@handled
def cancel(
    payment_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Cancel a payment: none of its pending occurrences will execute."""
    pid = _parse_id(payment_id)
    result = with_app(lambda app: app.cancel_payment(pid, actor=cli_actor()))
    in_flight = [{"key": o.key, "state": o.state.value} for o in result.in_flight]
    lines = [f"cancelled payment {pid} ({len(result.cancelled)} pending occurrence(s))"]
    lines += [
        f"  {o['key']} is {o['state']}: it cannot be cancelled and will finish" for o in in_flight
    ]
    emit(
        {
            "id": pid,
            "cancelled_occurrences": [o.key for o in result.cancelled],
            "in_flight": in_flight,
        },
        as_json,
        "\n".join(lines),
    )


@cli.command(context_settings=NEGATIVE_OK)
@handled
def pause(
    payment_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Pause a payment: nothing of it starts until `paysched resume ID`."""
    from paysched.views import payment_view

    pid = _parse_id(payment_id)
    held = with_app(lambda app: app.pause_payment(pid, actor=cli_actor()))
    emit(
        payment_view(held.payment) | {"held": [o.key for o in held.occurrences]},
        as_json,
        f"paused payment {pid} ({len(held.occurrences)} occurrence(s) held)",
    )


@cli.command(context_settings=NEGATIVE_OK)
@handled
def resume(
    payment_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Resume a paused payment; what fell due meanwhile follows its catch-up policy."""
    from paysched.views import payment_view

    pid = _parse_id(payment_id)
    held = with_app(lambda app: app.resume_payment(pid, actor=cli_actor()))
    missed = [o.key for o in held.missed]
    emit(
        payment_view(held.payment)
        | {"released": [o.key for o in held.occurrences], "missed": missed},
        as_json,
        f"resumed payment {pid}"
        + (f"; missed by its catch-up policy: {', '.join(missed)}" if missed else ""),
    )


@cli.command("skip-next", context_settings=NEGATIVE_OK)
@handled
def skip_next(
    payment_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Skip a payment's next occurrence (recorded as skipped; the series goes on)."""
    from paysched.views import iso

    pid = _parse_id(payment_id)
    occ = with_app(lambda app: app.skip_next(pid, actor=cli_actor()))
    emit(
        {"id": pid, "skipped": occ.key, "due_at": iso(occ.due_at)},
        as_json,
        f"skipped {occ.key} of payment {pid}, due {iso(occ.due_at)}",
    )


def _occurrence_ref(occurrence: str) -> str:
    ref = occurrence.strip()
    if not ref or not ref.isascii() or not ref.isprintable() or len(ref) > 80:
        raise InvalidInput("id", f"expected an occurrence id or key, got {occurrence!r}")
    return str(_parse_id(ref)) if ref.isdigit() else ref


@cli.command(context_settings=NEGATIVE_OK)
@handled
def approve(
    occurrence: Annotated[str, typer.Argument(metavar="ID", help="Occurrence id or key.")],
    as_json: JsonFlag = False,
) -> None:
    """Approve an occurrence awaiting approval: it runs at its due time. Not one of a
    payment you created (four eyes)."""
    ref = _occurrence_ref(occurrence)
    occ = with_app(lambda app: app.decide_occurrence(ref, True, actor=cli_actor()))
    emit(
        {"occurrence": occ.key, "state": occ.state.value},
        as_json,
        f"approved {occ.key}: it runs at its due time",
    )


@cli.command(context_settings=NEGATIVE_OK)
@handled
def reject(
    occurrence: Annotated[str, typer.Argument(metavar="ID", help="Occurrence id or key.")],
    reason: Annotated[str, typer.Option(help="Why: kept in the occurrence's history.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Reject an occurrence awaiting approval: it is cancelled and never runs."""
    ref = _occurrence_ref(occurrence)
    if not reason.strip():
        raise InvalidInput("reason", "say why it is rejected (--reason TEXT)")
    occ = with_app(lambda app: app.decide_occurrence(ref, False, reason, actor=cli_actor()))
    emit(
        {"occurrence": occ.key, "state": occ.state.value},
        as_json,
        f"rejected {occ.key}: cancelled, it never runs",
    )


@cli.command(context_settings=NEGATIVE_OK)
@handled
def preview(
    payment_id: Annotated[str, typer.Argument(metavar="ID")],
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many.")] = 12,
    as_json: JsonFlag = False,
) -> None:
    """The next due times of a payment (after holidays and DST), without changing anything."""
    from paysched.views import due_view

    pid = _parse_id(payment_id)
    with store_of(migrate=False) as store:
        dues = store.control.upcoming(pid, count)
    views = [due_view(d) for d in dues]
    lines = [
        v["due_at"] + ("" if v["due_at"] == v["nominal_at"] else f"  (rule date {v['nominal_at']})")
        for v in views
    ]
    emit(views, as_json, "\n".join(lines) or f"payment {pid} has nothing left to run")


@cli.command(context_settings=NEGATIVE_OK)
@handled
def resolve(
    occurrence: Annotated[str, typer.Argument(metavar="ID", help="Occurrence id or key.")],
    succeeded: Annotated[
        bool, typer.Option("--succeeded", help="The provider says the money moved.")
    ] = False,
    failed: Annotated[
        bool, typer.Option("--failed", help="The provider says no money moved.")
    ] = False,
    retry: Annotated[
        bool, typer.Option("--retry", help="Send it again with the same idempotency key.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why: kept in the occurrence's history.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Settle an occurrence whose outcome is unknown or needs review, by hand."""
    chosen = [
        name for name, on in (("succeeded", succeeded), ("failed", failed), ("retry", retry)) if on
    ]
    if len(chosen) != 1:
        raise InvalidInput("outcome", "give exactly one of --succeeded, --failed or --retry")
    ref = occurrence.strip()
    if not ref or not ref.isascii() or not ref.isprintable() or len(ref) > 80:
        raise InvalidInput("id", f"expected an occurrence id or key, got {occurrence!r}")
    if ref.isdigit():
        ref = str(_parse_id(ref))
    state = with_app(lambda app: app.resolve_occurrence(ref, chosen[0], reason, actor=cli_actor()))
    emit(
        {"occurrence": ref, "state": state.value}, as_json, f"occurrence {ref} is now {state.value}"
    )
