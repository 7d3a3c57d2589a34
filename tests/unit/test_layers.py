"""Which module may know what: checked on the source, so that a change crossing a boundary
fails here rather than in production."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import paysched

SRC = Path(paysched.__file__).parent
# The driver's errors become paysched's in db/errors.py (and db/engine.py reads URLs with
# SQLAlchemy's own parser). Anywhere else an `except IntegrityError` would never match: the
# engine raises paysched's ConstraintViolation, DatabaseUnavailable, ... instead.
MAY_IMPORT_SQLALCHEMY_EXC = {"db/errors.py", "db/engine.py"}


def sqlalchemy_exc_uses(tree: ast.AST) -> list[int]:
    """Lines importing sqlalchemy.exc (any spelling) or naming it as a string."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            if any(n == "sqlalchemy.exc" or n.startswith("sqlalchemy.exc.") for n in names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Import):
            if any(a.name.startswith("sqlalchemy.exc") for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and node.value == "sqlalchemy.exc":
            lines.append(node.lineno)  # sys.modules.get("sqlalchemy.exc")
    return lines


def test_only_paysched_db_knows_the_driver_errors() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        if str(path.relative_to(SRC)) not in MAY_IMPORT_SQLALCHEMY_EXC
        for line in sqlalchemy_exc_uses(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, (
        "sqlalchemy.exc used outside paysched.db.errors: catch paysched.errors' "
        f"DatabaseUnavailable, DatabaseError, ConstraintViolation or ValueRefused: {offenders}"
    )


def test_the_check_sees_every_spelling() -> None:
    sources = [
        "from sqlalchemy.exc import DBAPIError",
        "from sqlalchemy import exc",
        "import sqlalchemy.exc",
        "import sys\nsys.modules.get('sqlalchemy.exc')",
    ]
    assert all(sqlalchemy_exc_uses(ast.parse(s)) for s in sources)
    assert not sqlalchemy_exc_uses(ast.parse("from sqlalchemy import select"))


def test_the_executor_contract_imports_no_database() -> None:
    """What users implement (paysched.executors.base) stands alone: importing it loads
    neither paysched's database layer nor SQLAlchemy."""
    code = (
        "import sys; import paysched.executors.base; "
        "print(','.join(m for m in sys.modules if m.startswith(('paysched.db', 'sqlalchemy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
