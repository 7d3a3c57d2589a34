"""Commands that run paysched: run, serve, scheduler, worker, the bot, and the
supervised worker groups behind them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from paysched.errors import (
    ConfigError,
    PayschedError,
)

if TYPE_CHECKING:
    from paysched.app import App
    from paysched.config import Settings

from paysched.cli.base import cli, handled, settings, with_app

# -- long-running ------------------------------------------------------------------------------


def _serve(
    scheduler: bool,
    worker: bool,
    api: str | None = None,
    processes: int | None = 1,
    api_workers: int = 1,
    bot: bool = False,
) -> None:
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
        "--processes",
        min=1,
        max=1024,
        help="Worker processes, sharing PAYSCHED_CONCURRENCY (default: PAYSCHED_PROCESSES, "
        "else one per core).",
    ),
]


@cli.command()
@handled
def run(
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            metavar="[HOST:PORT]",
            help=f"Also serve the HTTP API (alone: {API_DEFAULT}).",
        ),
    ] = None,
    processes: Processes = None,
) -> None:
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


def _api_flag_default(argv: list[str]) -> list[str]:
    """`run --api` alone means the default address (click has no optional option values)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--api" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = f"--api={API_DEFAULT}"
    return out
