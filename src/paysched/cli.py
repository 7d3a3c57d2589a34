"""The command line: thin subcommands over App. Bad input -> one line on stderr, non-zero exit.

Only typer and light modules are imported here: `paysched --help` must not pay for SQLAlchemy,
Redis, BullMQ or Alembic (~0.8 s together). Each command imports what it needs when it runs;
commands that touch only the database or only counts use db.setup and paysched.reads instead of
App.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandFunctionType

from paysched import redaction
from paysched.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    DatabaseError,
    InvalidInput,
    NotFound,
    PayschedError,
    SchemaMismatch,
    ValueRefused,
)

if TYPE_CHECKING:
    from paysched.actors import Actor
    from paysched.app import App
    from paysched.config import Settings
    from paysched.db.store import Store

T = TypeVar("T")

EXIT_INPUT = 2  # bad input or configuration
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5  # Redis or the database does not answer


class _QuickHelp:
    """typer 0.29 coerces the value of --help when it is not given (None) through a pydantic
    TypeAdapter, importing pydantic (~0.15 s) for every command, even `paysched stats`. A bool
    default (False: not asked for help) takes its shortcut for bool flags instead."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.default is None:
            option.default = False
        return option


class QuickGroup(_QuickHelp, TyperGroup):
    pass


class QuickCommand(_QuickHelp, TyperCommand):
    pass


class QuickTyper(typer.Typer):
    """A Typer whose commands are QuickCommands unless they say otherwise."""

    def command(
        self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(*args, cls=cls or QuickCommand, **kwargs)


cli = QuickTyper(
    cls=QuickGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="paysched: scheduled payments, each exactly once, on time, never lost.",
)  # fmt: skip
accounts_cli = QuickTyper(cls=QuickGroup, no_args_is_help=True, help="Accounts and their balances.")
cli.add_typer(accounts_cli, name="accounts")

# For commands taking an id, a name or an amount: "-5" is a value to refuse with a reason
# naming the field, not an unknown option.
NEGATIVE_OK = {"ignore_unknown_options": True}
RemindOption = Annotated[
    str | None,
    typer.Option(
        "--remind",
        help="Remind the chats linked to the account this long before each payment it pays "
        "(e.g. 24h): the default of its new payments.",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _exit_code(exc: PayschedError) -> int:
    # ValueRefused: a value the database cannot hold is the input's fault, not the database's.
    if isinstance(exc, ConfigError | InvalidInput | SchemaMismatch | ValueRefused):
        return EXIT_INPUT
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    if isinstance(exc, BackendUnavailable | DatabaseError):
        return EXIT_UNAVAILABLE
    return 1


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {redaction.redact(message)}", err=True)
    return typer.Exit(code)


def handled(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn paysched errors into one line on stderr and a named exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except PayschedError as exc:
            raise fail(str(exc), _exit_code(exc)) from None
        except Exception as exc:
            kind = _backend_error(exc)
            if kind is None:
                raise
            # Redis went away mid-command: one line, never a traceback.
            first = str(exc).strip().splitlines()
            raise fail(f"backend unavailable: {first[0] if first else type(exc).__name__}",
                       EXIT_UNAVAILABLE) from None  # fmt: skip

    return wrapper


def _backend_error(exc: Exception) -> str | None:
    """What `exc` says about a backend: "backend" for Redis errors and OSError, else None (the
    database's errors arrive as paysched's, see paysched.db.errors). Matched without importing
    redis: an exception of redis's exists only if the module defining it was imported, so a
    module not yet in sys.modules cannot have raised it."""
    redis_exc = sys.modules.get("redis.exceptions")
    if redis_exc is not None and isinstance(exc, redis_exc.RedisError):
        return "backend"
    return "backend" if isinstance(exc, OSError) else None


def settings() -> Settings:
    from paysched.config import Settings

    cfg = Settings.from_env()
    redaction.remember(cfg.secrets())
    return cfg


def with_app(
    body: Callable[[App], Awaitable[T]],
    *,
    with_queue: bool = True,
    cfg: Settings | None = None,
    wait_for_backends: bool = False,
) -> T:
    """Run `body` with an App (which brings the schema up to date: only commands that write
    use it; those that only read go through store_of and paysched.reads)."""
    from paysched.app import App

    async def main() -> T:
        app = await App.open(
            cfg or settings(), with_queue=with_queue, wait_for_backends=wait_for_backends
        )
        try:
            return await body(app)
        finally:
            await app.close()

    return run_async(main())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(coro)


@contextlib.contextmanager
def store_of(*, migrate: bool, cfg: Settings | None = None) -> Iterator[Store]:
    """The store alone, for a command that needs only the database (see paysched.reads);
    `migrate=False` for one that only reads."""
    from paysched.db.setup import open_store

    with open_store(cfg or settings(), migrate=migrate) as store:
        yield store


def emit(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2) if as_json else text)


# -- long-running ------------------------------------------------------------------------------


def _serve(
    scheduler: bool, worker: bool, api: str | None = None, processes: int | None = 1,
    api_workers: int = 1, bot: bool = False,
) -> None:  # fmt: skip
    """Run the long-running parts: in this process, or (several processes asked for, or one
    per core by default: `processes=None`) as supervised children of this one."""
    import socket

    from paysched.logs import setup_logging

    cfg = settings()
    setup_logging(cfg.log_level, cfg.log_format)
    sock: socket.socket | None = None
    if api is not None:
        import importlib.util

        if any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "jinja2")):
            raise ConfigError("--api", "the HTTP API needs its extra: pip install 'paysched[api]'")
        from paysched.api.server import listen, parse_address

        sock = listen(*parse_address(api))
    try:
        count = _worker_processes(cfg, processes) if worker else 1
        if count > 1 or api_workers > 1:
            _supervise(cfg, scheduler, worker, sock, count, api_workers, bot)
        else:
            _serve_here(cfg, scheduler, worker, sock, bot)
    finally:
        if sock is not None:
            sock.close()


def _worker_processes(cfg: Settings, asked: int | None) -> int:
    """--processes, else PAYSCHED_PROCESSES, else one per core; never more than the
    concurrency, which the processes share."""
    from paysched.supervisor import cores

    count = asked if asked is not None else cfg.processes or cores()
    return max(1, min(count, cfg.concurrency))


def _supervise(
    cfg: Settings,
    scheduler: bool,
    worker: bool,
    sock: Any,
    count: int,
    api_workers: int,
    bot: bool = False,
) -> None:
    """The children: one per worker process (the first also runs the scheduler of `run` and
    its API), or one per API process; PAYSCHED_CONCURRENCY is the total, shared among the
    workers."""
    import logging

    from paysched.supervisor import child_command, shares, supervise

    api = ["--api-fd", str(sock.fileno())] if sock is not None else []
    children: list[tuple[str, list[str], dict[str, str]]] = []
    if worker:
        for i, share in enumerate(shares(cfg.concurrency, count)):
            # The first process also runs the bot: Telegram answers one poller per token.
            first = (
                [*(["--scheduler"] if scheduler else []), *(["--bot"] if bot else []), *api]
                if i == 0
                else []
            )
            args = ["--worker", *first]
            env = {"PAYSCHED_CONCURRENCY": str(share)}
            children.append((f"worker process {i + 1}/{count}", child_command(*args), env))
        logging.getLogger("paysched.supervisor").info(
            "%s worker processes sharing concurrency %s", count, cfg.concurrency
        )
    else:
        sched = ["--scheduler"] if scheduler else []
        for i in range(api_workers):
            name = f"API process {i + 1}/{api_workers}"
            children.append((name, child_command(*sched, *api), {}))
            sched = []
    code = supervise(cfg, children, [sock.fileno()] if sock is not None else [])
    if code:
        raise typer.Exit(code)


def _serve_here(cfg: Settings, scheduler: bool, worker: bool, sock: Any, bot: bool = False) -> None:
    import asyncio
    import signal

    if cfg.metrics_listen is not None:
        from prometheus_client import start_http_server

        host, port = cfg.metrics_listen
        try:
            start_http_server(port, addr=host)
        except OSError as exc:
            why = f"cannot listen on {host}:{port}: {exc.strerror}"
            raise ConfigError("PAYSCHED_METRICS_LISTEN", why) from None

    async def body(app: App) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        from paysched.supervisor import watch_parent

        orphaned = asyncio.create_task(watch_parent(stop))
        try:
            await _run_parts(app, stop, scheduler, worker, sock, bot)
        finally:
            stop.set()
            await orphaned

    # A service waits for its backends (saying so once); a command fails within seconds.
    with_app(body, cfg=cfg, wait_for_backends=True)


async def _run_parts(
    app: App, stop: Any, scheduler: bool, worker: bool, sock: Any, bot: bool = False
) -> None:
    """The API, the scheduler, the workers and the bot of one process, until `stop` is set."""
    import asyncio

    parts = [asyncio.create_task(_bot_part(app, stop))] if bot else []
    if sock is None:
        parts.append(asyncio.create_task(app.run(stop, scheduler=scheduler, worker=worker)))
        await asyncio.gather(*parts)
        return
    from paysched.api.server import serve as serve_api

    parts.append(asyncio.create_task(serve_api(app, sock, stop)))
    if scheduler or worker:
        parts.append(asyncio.create_task(app.run(stop, scheduler=scheduler, worker=worker)))
    await asyncio.gather(*parts)


async def _bot_part(app: App, stop: Any) -> None:
    """The bot inside `run` (PAYSCHED_BOT=on), by long polling. Payments matter more than
    chats: a bot that cannot start says so in the log and the rest runs on."""
    from paysched.bot.service import run_bot

    cfg = app.settings
    try:
        await run_bot(
            app.store.engine,
            app.clock,
            app.pool,
            cfg.telegram_token,
            cfg.telegram_api_url,
            stop,
            app=app,
        )
    except PayschedError as exc:
        import logging

        logging.getLogger("paysched.bot").error("the bot stopped: %s", exc)
    except Exception:
        import logging

        logging.getLogger("paysched.bot").exception("the bot stopped")


API_DEFAULT = "127.0.0.1:8080"
Processes = Annotated[
    int | None,
    typer.Option(
        "--processes", min=1, max=1024,
        help="Worker processes, sharing PAYSCHED_CONCURRENCY (default: PAYSCHED_PROCESSES, "
        "else one per core).",
    ),
]  # fmt: skip


@cli.command()
@handled
def run(
    api: Annotated[
        str | None,
        typer.Option(
            "--api", metavar="[HOST:PORT]",
            help=f"Also serve the HTTP API (alone: {API_DEFAULT}).",
        ),
    ] = None,
    processes: Processes = None,
) -> None:  # fmt: skip
    """Run the scheduler and the worker pool (until SIGTERM / Ctrl-C), on every core: the
    first worker process also runs the scheduler, the API and (PAYSCHED_BOT=on) the bot."""
    _serve(scheduler=True, worker=True, api=api, processes=processes, bot=settings().bot)


@cli.command()
@handled
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8080,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=1024, help="API processes sharing the port.")
    ] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) until SIGTERM / Ctrl-C."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    _serve(scheduler=False, worker=False, api=address, api_workers=workers)


@cli.command("scheduler")
@handled
def scheduler_cmd() -> None:
    """Run only the scheduler (several may run at once, on several machines)."""
    _serve(scheduler=True, worker=False)


@cli.command("worker")
@handled
def worker_cmd(processes: Processes = None) -> None:
    """Run only the worker pool, on every core."""
    _serve(scheduler=False, worker=True, processes=processes)


@cli.command("child", hidden=True)
@handled
def child_cmd(
    scheduler: Annotated[bool, typer.Option("--scheduler")] = False,
    worker: Annotated[bool, typer.Option("--worker")] = False,
    api_fd: Annotated[int | None, typer.Option("--api-fd")] = None,
    bot: Annotated[bool, typer.Option("--bot")] = False,
) -> None:
    """One process of a supervised group (paysched.supervisor): not for people to run."""
    import socket

    from paysched.logs import setup_logging
    from paysched.supervisor import adopt

    adopt()
    cfg = settings()
    setup_logging(cfg.log_level, cfg.log_format)
    sock = socket.socket(fileno=api_fd) if api_fd is not None else None
    _serve_here(cfg, scheduler, worker, sock, bot)


BOT_LISTEN = "127.0.0.1:8443"


@cli.command("bot")
@handled
def bot_cmd(
    webhook: Annotated[
        str | None,
        typer.Option(
            "--webhook",
            metavar="URL",
            help="Receive updates at this public https:// URL (Telegram posts there; a proxy "
            "forwards to --listen) instead of long polling.",
        ),
    ] = None,
    listen_on: Annotated[
        str, typer.Option("--listen", metavar="HOST:PORT", help="Where the webhook listens.")
    ] = BOT_LISTEN,
) -> None:
    """Answer Telegram chats (/upcoming, /history, /balance, /help, /start TOKEN) until
    SIGTERM / Ctrl-C: by long polling, or by webhook with --webhook."""
    import asyncio
    import signal

    from paysched.logs import setup_logging

    cfg = settings()
    setup_logging(cfg.log_level, cfg.log_format)
    if not cfg.telegram_token:
        raise ConfigError("TELEGRAM_BOT_TOKEN", "the bot needs its token, which is not set")
    sock = None
    if webhook is not None:
        from paysched.bot.service import webhook_path

        webhook_path(webhook)  # a bad URL before anything starts
        import importlib.util

        if importlib.util.find_spec("uvicorn") is None:
            raise ConfigError("--webhook", "needs the API extra: pip install 'paysched[api]'")
        from paysched.api.server import listen, parse_address

        try:
            sock = listen(*parse_address(listen_on, "--listen"))
        except ConfigError as exc:
            raise ConfigError("--listen", exc.problem) from None

    async def body(app: App) -> None:
        from paysched.bot.service import run_bot

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_bot(
            app.store.engine,
            app.clock,
            app.pool,
            cfg.telegram_token,
            cfg.telegram_api_url,
            stop,
            webhook=webhook,
            sock=sock,
            app=app,
        )

    try:
        with_app(body, with_queue=False, cfg=cfg, wait_for_backends=True)
    finally:
        if sock is not None:
            sock.close()


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
    name: str, currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    remind: RemindOption = None, approval_above: ApprovalAbove = None,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
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
        account = store.create_account(name, code, now, acting.then(), default)
        if above is not None:  # its own change, recorded as such
            account = _set_approval_above(store, account.name, above)
    acting.logged()
    emit(account_view(account), as_json, f"created account {account.name} ({account.currency})")


def _approval_above(text: str | None, currency: str) -> int | str | None:
    """--approval-above: minor units, 'off' (to clear it), or None (not given)."""
    from paysched.domain import parse_amount

    if text is None:
        return None
    if text.strip().lower() == "off":
        return "off"
    minor = parse_amount(text, currency, "approval_above")
    if minor < 0:
        raise InvalidInput("approval_above", f"must not be negative, got {text!r}")
    return minor


def _set_approval_above(store: Store, name: str, above: int | str) -> Any:
    """Set (or, 'off', clear) an account's approval rule, recorded as `set_account`."""
    from paysched.clock import SystemClock
    from paysched.db.actions import Acting, Subject

    minor = None if above == "off" else int(above)
    acting = Acting(cli_actor(), "set_account", SystemClock().now(),
                    lambda a: Subject(detail={"account": a.name,
                                              "approval_above": "off" if minor is None
                                              else minor}))  # fmt: skip
    account = store.set_approval_above(name, minor, acting.then())
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
        account = store.get_account(name)
        if remind is not None:
            acting = Acting(cli_actor(), "set_account", SystemClock().now(), account_subject)
            account = store.set_account_remind(name, default, acting.then())
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
        minor = deposit_amount(amount, store.get_account(name).currency)
        now = SystemClock().now()
        acting = Acting(cli_actor(), "deposit", now, deposit_subject(minor))
        account = store.deposit(name, minor, now, acting.then())
    acting.logged()
    view = account_view(account)
    emit(view, as_json, f"{account.name}: balance {view['balance']} {account.currency}")


@accounts_cli.command("show", context_settings=NEGATIVE_OK)
@handled
def accounts_show(name: str, as_json: JsonFlag = False) -> None:
    """Show an account's balance."""
    from paysched.views import account_view

    with store_of(migrate=False) as store:
        account = store.get_account(name)
    view = account_view(account)
    emit(view, as_json, f"{account.name}: balance {view['balance']} {account.currency}")


@accounts_cli.command("list")
@handled
def accounts_list(as_json: JsonFlag = False) -> None:
    """List accounts."""
    from paysched.views import account_view

    with store_of(migrate=False) as store:
        accounts = store.list_accounts()
    views = [account_view(a) for a in accounts]
    lines = [f"{v['name']:<24} {v['balance']:>14} {v['currency']}" for v in views]
    emit(views, as_json, "\n".join(lines) or "no accounts")


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
        payer=payer, payee=payee, amount=amount, currency=currency, at=at, in_=in_, cron=cron,
        tz=tz, memo=memo, notify=notify, allow_past=allow_past,
        allow_private=cfg.webhook_allow_private, now=SystemClock().now(), names=CLI_NAMES,
        calendar=rule, catchup=catchup, catchup_window=catchup_window, remind=remind,
        approval=approval, approval_timeout=approval_timeout, on_timeout=on_timeout,
    )  # fmt: skip
    if request.currency is None:
        with store_of(migrate=True) as store:
            request = request.in_currency(payer_currency(store.get_account, payer, CLI_NAMES))
    code = request.currency

    async def body(app: App) -> Any:
        return await app.create_payment(actor=cli_actor(), **request.fields())

    payment = with_app(body, cfg=cfg)
    view = payment_view(payment)
    when = view["due_at"] or f"{view['schedule']}, next {view['next_due_at']}"
    emit(view, as_json, f"scheduled payment {payment.id}: {view['amount']} {code} "
                        f"{payer} -> {payee} at {when}")  # fmt: skip


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
        views = payment_rows(store, store.list_payments(limit, payment_state_filter(state)))
    lines = [
        f"{v['id']:>6}  {marker(v):<9} {v['amount']:>12} {v['currency']}  {v['from']} -> "
        f"{v['to']}  {v['due_at'] or v['schedule']}"
        for v in views
    ]
    emit(views, as_json, "\n".join(lines) or "no payments")


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
        store.get_account(name)  # an unknown account before asking the Bot API anything
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


def cli_actor() -> Actor:
    """Who runs this command: `cli (alice)`, recorded with each change it makes."""
    from paysched.actors import Actor

    return Actor.cli()


def _parse_id(text: str) -> int:
    from paysched.domain import parse_id

    return parse_id(text, "id")


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


@cli.command("actions", context_settings=NEGATIVE_OK)
@handled
def actions_cmd(
    actor: Annotated[
        str | None, typer.Option(help="An API key's id (3 or #3), cli or python.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="create, cancel, deposit, ...")] = None,
    payment: Annotated[str | None, typer.Option(help="Done to this payment id.")] = None,
    since: Annotated[str | None, typer.Option(help="At or after (ISO 8601, or a date).")] = None,
    before: Annotated[str | None, typer.Option(help="Before (ISO 8601, or a date).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List what people did, newest first: every action, or those the options pick."""
    from paysched.audit import action_filter
    from paysched.db.actions import logged_view
    from paysched.reads import actions as read_actions

    found = action_filter(
        actor=actor,
        action=action,
        payment_id=payment,
        since=since,
        before=before,
        payment_field="payment",
    )
    with store_of(migrate=False) as store:
        views = [logged_view(a) for a in read_actions(store, found, limit)]
    lines = [
        f"{v['id']:>6}  {v['at']}  "
        + ("" if v["payment_id"] is None else f"payment {v['payment_id']}: ")
        + v["summary"]
        + (f" ({v['detail']['reason']})" if "reason" in v["detail"] else "")
        for v in views
    ]
    emit(views, as_json, "\n".join(lines) or "no actions")


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
    lines += [f"  {o['key']} is {o['state']}: it cannot be cancelled and will finish"
              for o in in_flight]  # fmt: skip
    emit({"id": pid, "cancelled_occurrences": [o.key for o in result.cancelled],
          "in_flight": in_flight}, as_json, "\n".join(lines))  # fmt: skip


@cli.command(context_settings=NEGATIVE_OK)
@handled
def pause(
    payment_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Pause a payment: nothing of it starts until `paysched resume ID`."""
    from paysched.views import payment_view

    pid = _parse_id(payment_id)
    held = with_app(lambda app: app.pause_payment(pid, actor=cli_actor()))
    emit(payment_view(held.payment) | {"held": [o.key for o in held.occurrences]}, as_json,
         f"paused payment {pid} ({len(held.occurrences)} occurrence(s) held)")  # fmt: skip


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
    emit(payment_view(held.payment) | {"released": [o.key for o in held.occurrences],
                                       "missed": missed}, as_json,
         f"resumed payment {pid}" + (f"; missed by its catch-up policy: {', '.join(missed)}"
                                     if missed else ""))  # fmt: skip


@cli.command("skip-next", context_settings=NEGATIVE_OK)
@handled
def skip_next(
    payment_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Skip a payment's next occurrence (recorded as skipped; the series goes on)."""
    from paysched.views import iso

    pid = _parse_id(payment_id)
    occ = with_app(lambda app: app.skip_next(pid, actor=cli_actor()))
    emit({"id": pid, "skipped": occ.key, "due_at": iso(occ.due_at)}, as_json,
         f"skipped {occ.key} of payment {pid}, due {iso(occ.due_at)}")  # fmt: skip


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
    emit({"occurrence": occ.key, "state": occ.state.value}, as_json,
         f"approved {occ.key}: it runs at its due time")  # fmt: skip


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
    emit({"occurrence": occ.key, "state": occ.state.value}, as_json,
         f"rejected {occ.key}: cancelled, it never runs")  # fmt: skip


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
        dues = store.upcoming(pid, count)
    views = [due_view(d) for d in dues]
    lines = [v["due_at"] + ("" if v["due_at"] == v["nominal_at"] else
                            f"  (rule date {v['nominal_at']})") for v in views]  # fmt: skip
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
    chosen = [name for name, on in (("succeeded", succeeded), ("failed", failed),
                                    ("retry", retry)) if on]  # fmt: skip
    if len(chosen) != 1:
        raise InvalidInput("outcome", "give exactly one of --succeeded, --failed or --retry")
    ref = occurrence.strip()
    if not ref or not ref.isascii() or not ref.isprintable() or len(ref) > 80:
        raise InvalidInput("id", f"expected an occurrence id or key, got {occurrence!r}")
    if ref.isdigit():
        ref = str(_parse_id(ref))
    state = with_app(lambda app: app.resolve_occurrence(ref, chosen[0], reason, actor=cli_actor()))
    emit({"occurrence": ref, "state": state.value}, as_json,
         f"occurrence {ref} is now {state.value}")  # fmt: skip


@cli.command()
@handled
def reconcile(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD, UTC) or time.")],
    end: Annotated[str, typer.Option("--to", help="Last day, included, or end time.")],
    resolve_unknown: Annotated[
        bool,
        typer.Option("--resolve", help="Settle unknown outcomes from the provider's answer."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Compare occurrences, the provider's charges and the ledger over a period.

    Exit 0 when all agree, 1 with a discrepancy (each printed, then a summary line)."""
    from paysched.app import default_executor
    from paysched.reconcile import parse_period

    period = parse_period(start, end)
    exit_code = 0

    async def body(app: App) -> None:
        nonlocal exit_code
        from paysched.reconcile import discrepancies, write_report

        app.executor = default_executor(app)
        rec = await app.reconciler().run(
            period.start, period.end, trigger="cli", by=cli_actor(), resolve=resolve_unknown
        )
        assert rec is not None  # no dedup key: always a new report
        await app.db(write_report, app.store, rec, as_json, typer.echo)
        if rec.state != "done":
            exit_code = EXIT_UNAVAILABLE
        elif discrepancies(rec):
            exit_code = 1

    with_app(body, with_queue=False)
    if exit_code:
        raise typer.Exit(exit_code)


@cli.command()
@handled
def stats(as_json: JsonFlag = False) -> None:
    """Queue counts (waiting, active, completed, failed, delayed, total) and occurrence states."""
    from paysched.reads import stats as read_stats

    # Not through App: no queue object, executor, scheduler or notifier is needed for counts.
    data = run_async(read_stats(settings()))
    lines = [
        f"{part + ':':<14} " + "  ".join(f"{k} {v}" for k, v in data[part].items())
        for part in ("queue", "occurrences", "notifications")
    ]
    lines += [
        f"{'processes:' if i == 0 else '':<14} {p['role']} {p['host']}:{p['pid']} {p['state']}, "
        f"seen {p['seen_s_ago']:g}s ago"
        for i, p in enumerate(data["processes"])
    ] or [f"{'processes:':<14} none seen in the last day"]
    emit(data, as_json, "\n".join(lines))


# -- exports and statements --------------------------------------------------------------------


@cli.command("export", context_settings=NEGATIVE_OK)
@handled
def export_cmd(
    kind: Annotated[str, typer.Argument(help="payments, occurrences or ledger.")],
    start: Annotated[
        str | None,
        typer.Option("--from", help="Start, inclusive: 2027-01-01 (midnight UTC) or ISO 8601."),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End, exclusive; as --from.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
    output: Annotated[
        str | None, typer.Option("--output", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """Export a period's payments (by created_at), occurrences (by due_at) or ledger entries
    (by created_at) as CSV with a header or as JSON Lines, page by page in constant memory."""
    from paysched.exports import chunks, export_request

    request = export_request(kind, fmt, start, end)
    with store_of(migrate=False) as store:
        if output is None:
            try:
                for chunk in chunks(store, request):
                    sys.stdout.buffer.write(chunk.text.encode())
                sys.stdout.flush()
            except BrokenPipeError:  # `| head`: the reader has what it wanted
                sys.stderr.close()
            return
        _export_to_file(store, request, output)


def _export_to_file(store: Store, request: Any, output: str) -> None:
    """Written to OUTPUT.part and renamed at the end: a file named OUTPUT is always whole."""
    import os

    from paysched.exports import chunks

    part = f"{output}.part"

    def refused(exc: OSError) -> InvalidInput:
        return InvalidInput("output", f"cannot write {output!r}: {exc.strerror or exc}")

    try:
        out = open(part, "wb")  # noqa: SIM115 - closed below, whatever happens
    except OSError as exc:
        raise refused(exc) from None
    try:
        with out:
            for chunk in chunks(store, request):
                try:
                    out.write(chunk.text.encode())
                except OSError as exc:
                    raise refused(exc) from None
        try:
            os.replace(part, output)
        except OSError as exc:
            raise refused(exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise


@cli.command("statement", context_settings=NEGATIVE_OK)
@handled
def statement_cmd(
    account: str,
    month: Annotated[str | None, typer.Option("--month", help="YYYY-MM (UTC).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """An account's month: opening balance, each entry with the balance after it, closing
    balance (checked: closing - opening is the sum of the entries)."""
    from paysched.exports import parse_month, statement_text, statement_view

    start, end = parse_month(month)
    assert month is not None
    with store_of(migrate=False) as store:
        data = store.statement(account, start, end)
    view = statement_view(data, month.strip())
    emit(view, as_json, statement_text(view))


notifications_cli = QuickTyper(
    cls=QuickGroup, no_args_is_help=True, help="The notification outbox."
)
cli.add_typer(notifications_cli, name="notifications")


@notifications_cli.command("list")
@handled
def notifications_list(
    state: Annotated[str | None, typer.Option(help="pending, sent or dead.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List notifications, newest first."""
    from paysched.reads import notifications as read_notifications
    from paysched.views import notification_view

    with store_of(migrate=False) as store:
        notifications = read_notifications(store, state, None, limit)
    views = [notification_view(n) for n in notifications]
    lines = [
        f"{v['id']:>6}  {v['state']:<7} payment {v['payment_id']:<6} {v['event']:<9} "
        f"{v['channel']}:{v['target']}" + (f"  ({v['last_error']})" if v["last_error"] else "")
        for v in views
    ]
    emit(views, as_json, "\n".join(lines) or "no notifications")


@notifications_cli.command("retry")
@handled
def notifications_retry(
    notification_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Send a dead notification again, with a fresh set of attempts."""
    from paysched.clock import SystemClock
    from paysched.db.actions import Acting, notification_subject
    from paysched.db.outbox import Outbox
    from paysched.views import notification_view

    nid = _parse_id(notification_id)
    now = SystemClock().now()
    acting = Acting(cli_actor(), "retry_notification", now, notification_subject)
    with store_of(migrate=True) as store:
        view = notification_view(Outbox(store.engine).retry(nid, now, acting.then()))
    acting.logged()
    emit(view, as_json, f"notification {nid} is pending again")


async def _queue_check(app: App, cfg: Settings, url: str) -> dict[str, Any]:
    """Is the queue used by another deployment (another database) too?"""
    from paysched.queue import PaymentQueue

    deployment = await app.db(app.store.deployment_id)
    queue = PaymentQueue(url, cfg.queue_name, cfg.queue_prefix, cfg.attempts, app.backoff,
                         deployment_id=deployment)  # fmt: skip
    try:
        others = await queue.other_deployments(app.clock.now())
    finally:
        await queue.close()
    if others:
        return {
            "ok": False,
            "deployment": deployment,
            "shared_with": others,
            "error": f"queue {cfg.queue_name!r} is shared with other deployment(s) "
            f"{', '.join(others)}: give each its own PAYSCHED_QUEUE or Redis db",
        }
    return {"ok": True, "deployment": deployment, "name": cfg.queue_name}


@cli.command()
@handled
def migrate(as_json: JsonFlag = False) -> None:
    """Bring the database schema to this paysched's revision (read-only commands never do)."""
    from paysched.db.schema import HEAD_REVISION
    from paysched.db.setup import open_store

    with open_store(settings(), migrate=False, check=False) as store:
        before, after = store.ensure_schema(migrate=True)
    if before == after:
        text = f"schema already at revision {after} (the newest)"
    else:
        text = f"schema migrated from revision {before or 'none (empty database)'} to {after}"
    emit({"before": before, "after": after, "head": HEAD_REVISION}, as_json, text)


@cli.command()
def check(as_json: JsonFlag = False) -> None:
    """Say whether Redis and the database answer; exit 0 only if both do."""
    result: dict[str, Any] = {}
    try:
        cfg = settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_INPUT) from None
    from paysched.app import App, probe_redis, resolve_redis
    from paysched.db.store.base import short_error
    from paysched.redis_client import sentinel_view

    mismatch: list[SchemaMismatch] = []

    async def body() -> None:
        app: App | None = None
        try:
            # A check changes nothing: an old schema is reported, not migrated.
            app = await App.open(cfg, with_queue=False, migrate=False)
            result["database"] = {"ok": True, "dialect": app.store.dialect}
        except SchemaMismatch as exc:
            mismatch.append(exc)
            result["database"] = {"ok": False, "error": str(exc)}
        except Exception as exc:
            result["database"] = {"ok": False, "error": short_error(exc)}
        try:
            if app is None:
                raise BackendUnavailable(
                    "skipped: database " + ("schema not usable" if mismatch else "unavailable")
                )
            url, embedded = resolve_redis(cfg)

            try:
                # Under Sentinel: which primary each sentinel names, before the PING (which
                # goes to that primary), so that a failed check still says what they see.
                sentinels = await sentinel_view(url)
                if sentinels is not None:
                    result["redis"] = {"ok": False, "sentinel": sentinels}
                await probe_redis(url)
                result["redis"] = {"ok": True, "embedded": embedded is not None}
                if sentinels is not None:
                    result["redis"]["sentinel"] = sentinels
                result["queue"] = await _queue_check(app, cfg, url)
            finally:
                if embedded is not None:
                    embedded.stop()
        except Exception as exc:
            result["redis"] = result.get("redis", {}) | {"ok": False, "error": short_error(exc)}
        finally:
            if app is not None:
                await app.close()

    run_async(body())
    ok = all(part.get("ok") for part in result.values())
    lines = [
        f"{name}: {'ok' if part['ok'] else 'FAILED: ' + part.get('error', '')}"
        for name, part in result.items()
    ]
    sentinel = result.get("redis", {}).get("sentinel")
    if sentinel is not None:
        lines.insert(list(result).index("redis") + 1, _sentinel_lines(sentinel))
    text = "\n".join(lines)
    emit(result | {"ok": ok}, as_json, text)
    if not ok:
        raise typer.Exit(EXIT_INPUT if mismatch else EXIT_UNAVAILABLE)


def _sentinel_lines(view: dict[str, Any]) -> str:
    """`paysched check`'s lines on Sentinel: the primary, then what each sentinel says."""
    answering = sum(1 for e in view["sentinels"] if e["ok"])
    primary = view["primary"] or "the sentinels disagree or know none"
    head = f"  primary {view['master']!r}: {primary}"
    rows = [
        f"  sentinel {e['address']}: "
        + (f"names {e['primary']}" if e["ok"] else f"FAILED: {e.get('error', '')}")
        for e in view["sentinels"]
    ]
    return "\n".join([f"{head} ({answering} of {len(rows)} sentinels answer)", *rows])


class DemoExecutor(StrEnum):
    LEDGER = "ledger"
    HTTP = "http"


@cli.command()
@handled
def demo(
    count: Annotated[int, typer.Option(min=1, max=5000, help="Payments to schedule.")] = 50,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="Spread of due times.")] = 20,
    executor: Annotated[
        DemoExecutor,
        typer.Option(help="ledger: the in-house ledger; http: the stand-in payment provider."),
    ] = DemoExecutor.LEDGER,
    as_json: JsonFlag = False,
) -> None:
    """Schedule ~50 payments over ~20 s on a fresh demo database, run them, print a summary."""
    from paysched.demo import run_demo

    summary = run_demo(
        settings(), count=count, seconds=seconds, quiet=as_json, executor=executor.value
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    provider_ok = summary.get("provider", {"matches": True})["matches"]
    if not summary["ledger_balanced"] or summary["unfinished"] or not provider_ok:
        raise typer.Exit(1)


# -- API keys ----------------------------------------------------------------------------------

apikeys_cli = typer.Typer(no_args_is_help=True, help="Keys of the HTTP API.")
cli.add_typer(apikeys_cli, name="apikeys")


SCOPE_HELP = "read: GET; write: + create, deposit, cancel; admin: + resolve occurrences."


def _apikey_view(key: Any) -> dict[str, Any]:
    from paysched.views import iso

    return {"id": key.id, "name": key.name, "scope": key.scope, "prefix": f"psk_{key.prefix}",
            "created_at": iso(key.created_at), "last_used_at": iso(key.last_used_at),
            "revoked_at": iso(key.revoked_at)}  # fmt: skip


@apikeys_cli.command("create")
@handled
def apikeys_create(
    name: str,
    scope: Annotated[str, typer.Option(help=SCOPE_HELP)],
    as_json: JsonFlag = False,
) -> None:
    """Create an API key. The key is printed once: it is stored only as a hash."""
    from paysched.db.actions import Acting, key_subject
    from paysched.db.apikeys import ApiKeys

    async def body(app: App) -> Any:
        now = app.clock.now()
        acting = Acting(cli_actor(), "create_api_key", now, key_subject(scope))
        created = await app.db(ApiKeys(app.store.engine).create, name, scope, now, acting.then())
        acting.logged()
        return created

    row, key = with_app(body, with_queue=False)
    emit({"id": row.id, "key": key, "name": row.name, "scope": row.scope}, as_json,
         f"created API key {row.id} ({row.name}, {row.scope}):\n{key}\n"
         "store it now: it is not shown again")  # fmt: skip


@apikeys_cli.command("list")
@handled
def apikeys_list(as_json: JsonFlag = False) -> None:
    """List API keys (their public prefixes, never the keys)."""
    from paysched.db.apikeys import ApiKeys

    keys = with_app(lambda app: app.db(ApiKeys(app.store.engine).list), with_queue=False)
    views = [_apikey_view(k) for k in keys]
    lines = [
        f"{v['id']:>4}  {v['scope']:<5}  {v['prefix']:<16} {v['name']:<24} "
        + (f"revoked {v['revoked_at']}" if v["revoked_at"] else f"last used {v['last_used_at']}")
        for v in views
    ]
    emit(views, as_json, "\n".join(lines) or "no API keys")


@apikeys_cli.command("revoke", context_settings=NEGATIVE_OK)
@handled
def apikeys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Revoke an API key: its next request is refused."""
    from paysched.db.actions import Acting, key_subject
    from paysched.db.apikeys import ApiKeys

    kid = _parse_id(key_id)

    async def body(app: App) -> Any:
        now = app.clock.now()
        acting = Acting(cli_actor(), "revoke_api_key", now, key_subject(None))
        revoked = await app.db(ApiKeys(app.store.engine).revoke, kid, now, acting.then())
        acting.logged()
        return revoked

    emit(_apikey_view(with_app(body, with_queue=False)), as_json, f"revoked API key {kid}")


def _api_flag_default(argv: list[str]) -> list[str]:
    """`run --api` alone means the default address (click has no optional option values)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--api" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = f"--api={API_DEFAULT}"
    return out


def main() -> None:
    import sys

    try:
        with contextlib.suppress(KeyboardInterrupt):
            cli(args=_api_flag_default(sys.argv[1:]), prog_name="paysched")
    finally:
        # At exit the interpreter's last garbage collections walk every object SQLAlchemy,
        # redis and typer created (~0.1 s of a 0.5 s command); frozen objects are skipped.
        # Nothing is lost: atexit handlers and finalizers by reference count still run.
        gc.freeze()


__all__ = ["cli", "main"]
