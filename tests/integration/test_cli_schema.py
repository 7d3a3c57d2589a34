"""The schema and the command line: read-only commands never migrate, writing ones do,
`paysched migrate` does it on purpose. Real processes, SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from paysched.db.engine import alembic_config
from paysched.db.schema import HEAD_REVISION, REVISIONS
from tests.integration.test_cli import as_json, one_line_error, paysched

OLDER = REVISIONS[-2]
READ_ONLY = [
    ["list"],
    ["show", "1"],
    ["stats"],
    ["accounts", "show", "alice"],
    ["accounts", "list"],
    ["notifications", "list"],
]


def _at_revision(url: str, revision: str) -> None:
    """The database migrated by Alembic up to `revision` only, as an older paysched left it."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def _schema(url: str) -> tuple[Any, list[str]]:
    """(the revision, the tables) of the database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            revision = None
            if "alembic_version" in tables:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return revision, tables
    finally:
        engine.dispose()


def _set_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def test_migrate_an_empty_database_then_one_at_head(env: dict[str, str]) -> None:
    assert as_json(env, "migrate") == {
        "before": None,
        "after": HEAD_REVISION,
        "head": HEAD_REVISION,
    }
    assert _schema(env["DATABASE_URL"])[0] == HEAD_REVISION
    assert as_json(env, "migrate") == {
        "before": HEAD_REVISION,
        "after": HEAD_REVISION,
        "head": HEAD_REVISION,
    }
    assert "already at revision" in paysched(env, "migrate").stdout


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: "-".join(a))
def test_a_read_only_command_refuses_an_older_schema(env: dict[str, str], args: list[str]) -> None:
    url = env["DATABASE_URL"]
    _at_revision(url, OLDER)
    before = _schema(url)
    result = paysched(env, *args, check=False)
    one_line_error(result, 2, f"revision {OLDER}", HEAD_REVISION, "paysched migrate")
    assert _schema(url) == before  # nothing migrated, nothing created


def test_check_reports_an_older_schema_and_changes_nothing(env: dict[str, str]) -> None:
    url = env["DATABASE_URL"]
    _at_revision(url, OLDER)
    before = _schema(url)
    result = paysched(env, "check", check=False)
    assert result.returncode == 2, result.stderr
    assert "paysched migrate" in result.stdout
    assert _schema(url) == before


def test_migrate_brings_an_older_schema_to_head(env: dict[str, str]) -> None:
    _at_revision(env["DATABASE_URL"], OLDER)
    assert as_json(env, "migrate") == {
        "before": OLDER,
        "after": HEAD_REVISION,
        "head": HEAD_REVISION,
    }
    assert as_json(env, "list") == []


def test_a_write_command_migrates_an_older_schema(env: dict[str, str]) -> None:
    _at_revision(env["DATABASE_URL"], OLDER)
    assert as_json(env, "accounts", "create", "alice")["name"] == "alice"
    assert _schema(env["DATABASE_URL"])[0] == HEAD_REVISION


def test_a_write_command_on_an_empty_database_just_works(env: dict[str, str]) -> None:
    assert _schema(env["DATABASE_URL"]) == (None, [])
    assert as_json(env, "accounts", "create", "alice")["balance"] == "0.00"
    assert _schema(env["DATABASE_URL"])[0] == HEAD_REVISION
    assert [a["name"] for a in as_json(env, "accounts", "list")] == ["alice"]


def test_a_read_only_command_on_an_empty_database_creates_the_schema(
    env: dict[str, str],
) -> None:
    """A fresh install: nothing to lose, so `paysched list` answers (empty) instead of
    asking for `paysched migrate` first."""
    assert as_json(env, "list") == []
    assert _schema(env["DATABASE_URL"])[0] == HEAD_REVISION


@pytest.mark.parametrize(
    "args", [["list"], ["accounts", "create", "bob"], ["migrate"]], ids=lambda a: "-".join(a)
)
def test_a_schema_of_a_newer_paysched_is_refused(env: dict[str, str], args: list[str]) -> None:
    paysched(env, "migrate")
    _set_revision(env["DATABASE_URL"], "9999")
    result = paysched(env, *args, check=False)
    one_line_error(result, 2, "revision 9999", "newer paysched", "upgrade paysched")
    assert _schema(env["DATABASE_URL"])[0] == "9999"


def test_read_only_commands_load_neither_alembic_nor_the_queue(env: dict[str, str]) -> None:
    """What keeps them quick: at the head, no Alembic (the revision is one query), no bullmq or
    App (stats counts with BullMQ's script), no pydantic for commands without value options
    (typer's coercion of --help; typer coerces an --limit through pydantic)."""
    import os
    import subprocess
    import sys

    paysched(env, "migrate")
    code = (
        "import sys\n"
        "from paysched.cli import main\n"
        "sys.argv = ['paysched', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    heavy = ('alembic', 'bullmq', 'paysched.app', 'httpx', 'pydantic')\n"
        "    print('\\n' + ' '.join(m for m in heavy if m in sys.modules))\n"
    )
    for args, loaded in (
        (["list", "--json"], "pydantic"),
        (["stats", "--json"], ""),
        (["accounts", "list"], ""),
    ):
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=os.environ | env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == loaded, (args, result.stdout)
