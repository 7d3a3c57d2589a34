"""paysched.db.schema's REVISIONS and HEAD_REVISION are what the migration scripts say.

Read-only commands compare the database's revision with HEAD_REVISION instead of asking
Alembic (too slow to import for a command); a migration added without updating the constant
would make every read-only command refuse a freshly migrated database, or accept an old one.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory

from paysched.db.engine import MIGRATIONS_DIR
from paysched.db.schema import HEAD_REVISION, REVISIONS, needs_migration
from paysched.errors import SchemaMismatch


def test_head_revision_is_alembics_head() -> None:
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    assert scripts.get_heads() == [HEAD_REVISION]
    chain = [rev.revision for rev in scripts.walk_revisions("base", "heads")]
    assert tuple(reversed(chain)) == REVISIONS  # every revision, oldest first


def test_what_each_revision_leads_to() -> None:
    assert not needs_migration(HEAD_REVISION, migrate=False)
    assert needs_migration(None, migrate=False)  # a fresh database
    assert needs_migration(REVISIONS[0], migrate=True)
    with pytest.raises(SchemaMismatch, match="run `paysched migrate`") as behind:
        needs_migration(REVISIONS[0], migrate=False)
    assert REVISIONS[0] in str(behind.value) and HEAD_REVISION in str(behind.value)
    for migrate in (False, True):
        with pytest.raises(SchemaMismatch, match="newer paysched"):
            needs_migration("9999", migrate=migrate)


def test_cli_imports_no_backend_library() -> None:
    """`paysched --help` must not import what only running a command needs."""
    heavy = (
        "sqlalchemy",
        "alembic",
        "redis",
        "bullmq",
        "paysched.app",
        "pydantic",
        "iso4217",
        "croniter",
        "httpx",
        "asyncio",
    )
    code = (
        "import sys; import paysched.cli; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_backend_errors_are_matched_without_importing_them() -> None:
    import redis

    from paysched.cli import _backend_error

    assert _backend_error(redis.ConnectionError("refused")) == "backend"
    assert _backend_error(ConnectionRefusedError()) == "backend"
    assert _backend_error(ValueError("a bug")) is None
