"""paysched accounts ...: accounts, deposits, and the chats linked to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from paysched.errors import (
    InvalidInput,
)

if TYPE_CHECKING:
    from paysched.db.store import Store

from paysched.cli.base import (
    NEGATIVE_OK,
    JsonFlag,
    RemindOption,
    accounts_cli,
    cli_actor,
    emit,
    handled,
    settings,
    store_of,
)

# -- accounts ----------------------------------------------------------------------------------


ApprovalAbove = Annotated[
    str | None,
    typer.Option(
        help="Its payments above this amount require approval (someone other than their "
        "creator approves each occurrence); 'off': none do.",
    ),
]


@accounts_cli.command("create", context_settings=NEGATIVE_OK)
@handled
def accounts_create(
    name: str,
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    remind: RemindOption = None,
    approval_above: ApprovalAbove = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an account with a zero balance."""
    from paysched.clock import SystemClock
    from paysched.db.actions import Acting, account_subject
    from paysched.domain import parse_currency
    from paysched.inputs import parse_remind_setting
    from paysched.views import account_view

    code = parse_currency(currency)
    default = parse_remind_setting(remind)
    above = _approval_above(approval_above, code)
    now = SystemClock().now()
    acting = Acting(cli_actor(), "create_account", now, account_subject)
    with store_of(migrate=True) as store:
        account = store.accounts.create_account(name, code, now, acting.then(), default)
        if above is not None:  # its own change, recorded as such
            account = _set_approval_above(store, account.name, above)
    acting.logged()
    emit(account_view(account), as_json, f"created account {account.name} ({account.currency})")


def _approval_above(text: str | None, currency: str) -> int | str | None:
    """--approval-above: minor units, 'off' (to clear it), or None (not given)."""
    from paysched.inputs import parse_approval_above

    if text is None:
        return None
    minor = parse_approval_above(text, currency)
    return "off" if minor is None else minor


def _set_approval_above(store: Store, name: str, above: int | str) -> Any:
    """Set (or, 'off', clear) an account's approval rule, recorded as `set_account`."""
    from paysched.clock import SystemClock
    from paysched.db.actions import Acting, approval_rule_subject

    minor = None if above == "off" else int(above)
    acting = Acting(cli_actor(), "set_account", SystemClock().now(), approval_rule_subject(minor))
    account = store.approvals.set_approval_above(name, minor, acting.then())
    acting.logged()
    return account


@accounts_cli.command("set", context_settings=NEGATIVE_OK)
@handled
def accounts_set(
    name: str,
    remind: Annotated[
        str | None,
        typer.Option(help="The reminder default of its new payments (e.g. 24h), or off."),
    ] = None,
    approval_above: ApprovalAbove = None,
    as_json: JsonFlag = False,
) -> None:
    """Change an account's settings, for the payments created from now on (those it pays
    already keep their own): its --remind default, its --approval-above rule."""
    from paysched.clock import SystemClock
    from paysched.db.actions import Acting, account_subject
    from paysched.inputs import parse_remind_setting
    from paysched.views import account_view

    if remind is None and approval_above is None:
        raise InvalidInput("remind", "give a setting to change: --remind or --approval-above")
    # A bad value is named before the account is looked up (the amount needs its currency).
    default = None if remind is None else parse_remind_setting(remind)
    lines = []
    with store_of(migrate=True) as store:
        account = store.accounts.get_account(name)
        if remind is not None:
            acting = Acting(cli_actor(), "set_account", SystemClock().now(), account_subject)
            account = store.accounts.set_account_remind(name, default, acting.then())
            acting.logged()
        if approval_above is not None:
            above = _approval_above(approval_above, account.currency)
            assert above is not None
            account = _set_approval_above(store, account.name, above)
    view = account_view(account)
    if remind is not None:
        lines.append(f"reminders {view['remind'] or 'off'}")
    if approval_above is not None:
        rule = view.get("approval_above")
        lines.append(
            f"payments above {rule} {account.currency} require approval"
            if rule is not None
            else "no approval required"
        )
    emit(view, as_json, f"{account.name}: " + "; ".join(lines))


@accounts_cli.command("deposit", context_settings=NEGATIVE_OK)
@handled
def accounts_deposit(name: str, amount: str, as_json: JsonFlag = False) -> None:
    """Add money to an account (e.g. `deposit alice 100.00`)."""
    from paysched.clock import SystemClock
    from paysched.db.actions import Acting, deposit_subject
    from paysched.domain import refuse_external
    from paysched.inputs import deposit_amount
    from paysched.views import account_view

    with store_of(migrate=True) as store:
        refuse_external(name)
        minor = deposit_amount(amount, store.accounts.get_account(name).currency)
        now = SystemClock().now()
        acting = Acting(cli_actor(), "deposit", now, deposit_subject(minor))
        account = store.accounts.deposit(name, minor, now, acting.then())
    acting.logged()
    view = account_view(account)
    emit(view, as_json, f"{account.name}: balance {view['balance']} {account.currency}")


@accounts_cli.command("show", context_settings=NEGATIVE_OK)
@handled
def accounts_show(name: str, as_json: JsonFlag = False) -> None:
    """Show an account's balance."""
    from paysched.views import account_view

    with store_of(migrate=False) as store:
        account = store.accounts.get_account(name)
    view = account_view(account)
    emit(view, as_json, f"{account.name}: balance {view['balance']} {account.currency}")


@accounts_cli.command("list")
@handled
def accounts_list(as_json: JsonFlag = False) -> None:
    """List accounts."""
    from paysched.views import account_view

    with store_of(migrate=False) as store:
        accounts = store.accounts.list_accounts()
    views = [account_view(a) for a in accounts]
    lines = [f"{v['name']:<24} {v['balance']:>14} {v['currency']}" for v in views]
    emit(views, as_json, "\n".join(lines) or "no accounts")


@accounts_cli.command("link", context_settings=NEGATIVE_OK)
@handled
def accounts_link(
    name: str,
    telegram: Annotated[
        bool, typer.Option("--telegram", help="A Telegram chat (the only channel so far).")
    ] = False,
    approver: Annotated[
        bool,
        typer.Option(
            "--approver",
            help="Link the chat as the account's approver: it also approves or rejects its "
            "payments awaiting approval.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """A one-time link that ties the chat it is opened in to this account (it expires after
    PAYSCHED_LINK_TTL and works once)."""
    from paysched.clock import SystemClock
    from paysched.linking import bot_username_now, issue, issued_view

    if not telegram:
        raise InvalidInput("--telegram", "say which kind of chat to link: --telegram")
    cfg = settings()
    with store_of(migrate=True, cfg=cfg) as store:
        store.accounts.get_account(name)  # an unknown account before asking the Bot API anything
        username = bot_username_now(cfg)  # before the token: a failure here makes none
        role = "approver" if approver else "holder"
        issued = issue(store.engine, name, cli_actor(), SystemClock().now(), cfg, role=role)
    view = issued_view(issued, username)
    minutes = round(cfg.link_ttl.total_seconds() / 60)
    as_what = " as its approver" if approver else ""
    emit(
        view,
        as_json,
        f"open this link in the Telegram chat to link to {view['account']}{as_what} "
        f"(it works once, within {minutes} min):\n{view['url']}",
    )


@accounts_cli.command("unlink", context_settings=NEGATIVE_OK)
@handled
def accounts_unlink(
    name: str,
    chat: Annotated[str, typer.Option("--chat", help="The linked chat's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Remove a chat's link to this account: the chat sees nothing of it any more."""
    from paysched.clock import SystemClock
    from paysched.linking import link_view, parse_chat, unlink

    chat_id = parse_chat(chat, "--chat")
    with store_of(migrate=True) as store:
        removed = unlink(store.engine, name, cli_actor(), SystemClock().now(), chat_id=chat_id)
    emit(link_view(removed), as_json, f"unlinked chat {removed.chat_id} from {removed.account}")


@accounts_cli.command("links", context_settings=NEGATIVE_OK)
@handled
def accounts_links(name: str, as_json: JsonFlag = False) -> None:
    """The chats linked to this account."""
    from paysched.db.links import ChatLinks
    from paysched.linking import link_view

    with store_of(migrate=False) as store:
        views = [link_view(link) for link in ChatLinks(store.engine).links_of(name)]
    lines = [
        f"{v['id']:>4}  {v['channel']:<9} {v['chat_id']:<16} {v['role']:<8} "
        f"linked {v['created_at']}"
        for v in views
    ]
    emit(views, as_json, "\n".join(lines) or "no linked chats")
