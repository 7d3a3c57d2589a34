"""paysched demo: the whole path on the embedded default, in one command."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from paysched.cli.base import JsonFlag, cli, handled, settings


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
