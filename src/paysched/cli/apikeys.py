"""paysched apikeys ...: the HTTP API's keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

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
    with_app,
)

# -- API keys ----------------------------------------------------------------------------------

apikeys_cli = typer.Typer(no_args_is_help=True, help="Keys of the HTTP API.")
cli.add_typer(apikeys_cli, name="apikeys")


SCOPE_HELP = (
    "read: GET; write: + create, deposit, cancel; approve: + approve or reject occurrences "
    "awaiting approval; admin: + resolve occurrences."
)


def _apikey_view(key: Any) -> dict[str, Any]:
    from paysched.views import iso

    return {
        "id": key.id,
        "name": key.name,
        "scope": key.scope,
        "prefix": f"psk_{key.prefix}",
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }


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
    emit(
        {"id": row.id, "key": key, "name": row.name, "scope": row.scope},
        as_json,
        f"created API key {row.id} ({row.name}, {row.scope}):\n{key}\n"
        "store it now: it is not shown again",
    )


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
