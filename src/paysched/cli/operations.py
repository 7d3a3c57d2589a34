"""An operator's commands: the action log, reconcile, stats, exports and statements,
notifications, migrate, check."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from paysched.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    SchemaMismatch,
)

if TYPE_CHECKING:
    from paysched.app import App
    from paysched.config import Settings
    from paysched.db.store import Store

from paysched.cli.base import (
    EXIT_INPUT,
    EXIT_UNAVAILABLE,
    NEGATIVE_OK,
    JsonFlag,
    QuickGroup,
    QuickTyper,
    _parse_id,
    cli,
    cli_actor,
    emit,
    fail,
    handled,
    run_async,
    settings,
    store_of,
    with_app,
)


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
        data = store.exports.statement(account, start, end)
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
    queue = PaymentQueue(
        url, cfg.queue_name, cfg.queue_prefix, cfg.attempts, app.backoff, deployment_id=deployment
    )
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
