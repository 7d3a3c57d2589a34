"""Engine creation and migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from paysched.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every paysched process.
_MIGRATION_LOCK_ID = 0x70617973
# Execution option marking a connection that only reads.
READ_ONLY = "paysched_read_only"


def reading(engine: Engine) -> Connection:
    """A connection for reads only. On PostgreSQL in autocommit: at READ COMMITTED each
    statement sees its own snapshot whether or not a transaction is open, so the BEGIN and
    ROLLBACK around a read were two round trips that bought nothing (of the auth lookup's
    four: ping, BEGIN, SELECT, ROLLBACK). On SQLite a deferred BEGIN (see
    _sqlite_write_locking), which gives the read one snapshot and never waits for a writer."""
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    return engine.connect().execution_options(**options)


def make_engine(url: str, pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=pool_size
        )
        _sqlite_write_locking(engine)
        return engine
    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError(
            "DATABASE_URL", "PostgreSQL needs its driver: pip install 'paysched[postgresql]'"
        )
    # A worker must never wait forever on a row another process locked, and a process that
    # hangs inside a transaction must not hold its locks forever: PostgreSQL ends both.
    options = "-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s"
    return create_engine(
        url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True, pool_recycle=1800,
        # A command reports an unreachable database within seconds, not the OS's TCP timeout.
        connect_args={"options": options, "connect_timeout": 5},
    )  # fmt: skip


def _sqlite_write_locking(engine: Engine) -> None:
    """Start SQLite write transactions with BEGIN IMMEDIATE, reads with a deferred BEGIN.

    A deferred transaction that reads and then writes can fail at once with "database is locked"
    when another connection wrote in between (the busy timeout does not apply to that upgrade).
    Taking the write lock up front makes concurrent writers queue on the busy timeout instead.
    Connections marked READ_ONLY (see Store) keep a deferred BEGIN: under WAL they never wait
    for a writer, even one that hangs inside its transaction.
    This is SQLAlchemy's documented recipe for pysqlite's transaction handling.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def alembic_config(engine: Engine) -> Config:
    # Imported here, not at the top: alembic costs ~0.25 s to import, and only a migration
    # needs it (a command on an up-to-date schema checks the revision with one query instead).
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision. Safe when several processes start at once."""
    from alembic import command

    cfg = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                conn.commit()
    else:
        # SQLite: the migration's BEGIN IMMEDIATE already serialises concurrent starters.
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
