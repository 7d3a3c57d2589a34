"""The command line's frame: the Typer app and its groups, exit codes, error handling,
settings and the App / store a command runs with, output."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
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
    cls=QuickGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="paysched: scheduled payments, each exactly once, on time, never lost.",
)
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
            raise fail(
                f"backend unavailable: {first[0] if first else type(exc).__name__}",
                EXIT_UNAVAILABLE,
            ) from None

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


def cli_actor() -> Actor:
    """Who runs this command: `cli (alice)`, recorded with each change it makes."""
    from paysched.actors import Actor

    return Actor.cli()


def _parse_id(text: str) -> int:
    from paysched.domain import parse_id

    return parse_id(text, "id")
