"""Engine creation and migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from paysched.db import errors
from paysched.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("paysched.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every paysched process.
_MIGRATION_LOCK_ID = 0x70617973
# Execution option marking a connection that only reads.
READ_ONLY = "paysched_read_only"


_MULTIHOST = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://(?:.*@)?)(?P<hosts>[^@/?]*)"
    r"(?P<path>/[^?]*)?(?:\?(?P<query>.*))?\Z",
    re.S,
)
_HOST_PORT = re.compile(
    r"\A(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[^:]*))?\Z"
)


def multihost_query_form(url: str) -> str:
    """libpq's multi-host URL `postgresql://u@h1:5432,h2:5433/db?…` rewritten to the form
    SQLAlchemy parses, `postgresql://u@/db?host=h1,h2&port=5432,5433&…` (make_url reads the
    first form's port as "5432,h2:5433" and raises). Other URLs come back unchanged.
    Raises ConfigError("DATABASE_URL") for a host list it cannot read."""
    match = _MULTIHOST.match(url)
    if match is None or "," not in match["hosts"]:
        return url
    query = match["query"] or ""
    if re.search(r"(?:\A|&)(?:host|port|hostaddr)=", query):
        raise ConfigError(
            "DATABASE_URL",
            "name the hosts either before the database name "
            "(h1:5432,h2:5432) or as ?host=, not both",
        )
    hosts: list[str] = []
    ports: list[str] = []
    for item in match["hosts"].split(","):
        parsed = _HOST_PORT.match(item.strip())
        if parsed is None:
            raise ConfigError(
                "DATABASE_URL",
                f"cannot read host {item!r} of the host list (expected host:port,host:port)",
            )
        port = parsed["port"] or "5432"
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(
                "DATABASE_URL", f"the port of host {item!r} is not a number between 1 and 65535"
            )
        hosts.append(parsed["v6"] or parsed["name"])
        ports.append(str(int(port)))
    query = "&".join(p for p in (f"host={','.join(hosts)}&port={','.join(ports)}", query) if p)
    return f"{match['head']}{match['path'] or '/'}?{query}"


def read_url(url: str) -> URL:
    """SQLAlchemy's reading of a database URL; ValueError for one it cannot read (a port
    that is not a number included, which would otherwise fail only at connect time)."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018
    except ArgumentError as exc:
        raise ValueError(str(exc)) from None
    return parsed


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
    url = multihost_query_form(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=pool_size
        )
        _sqlite_write_locking(engine)
        errors.install(engine)
        return engine
    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError(
            "DATABASE_URL", "PostgreSQL needs its driver: pip install 'paysched[postgresql]'"
        )
    # A worker must never wait forever on a row another process locked, and a process that
    # hangs inside a transaction must not hold its locks forever: PostgreSQL ends both.
    options = "-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s"
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=5,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "options": options,
            # Per host (psycopg tries the hosts of a multi-host URL one after the other): a
            # host that is gone costs each new connection this long before the next is tried.
            "connect_timeout": CONNECT_TIMEOUT_S,
            # A primary whose machine or network is gone sends no reset: without these, a
            # statement in flight on it waited for the OS's retransmission timeout (~15 min)
            # with its worker's whole claim/settle pipeline queued behind it, silently.
            # Keepalives probe an idle connection; tcp_user_timeout also bounds unacknowledged
            # data and probes; either way the connection fails within ~10 s.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        },
    )
    _watch_postgresql(engine)
    errors.install(engine)  # after _watch_postgresql's handler, which marks lost connections
    return engine


CONNECT_TIMEOUT_S = 5
TCP_USER_TIMEOUT_MS = 10_000
# A statement or COMMIT this long without an answer is logged. One this long is cut off (its
# socket shut down, so the thread and connection are freed and the work retried): longer than
# lock_timeout, the longest a healthy server keeps paysched waiting. What keepalives cannot
# see needs it: a server that still ACKs but never answers (hung, stopped), or a COMMIT that
# waits for a synchronous standby that is not there (a promoted standby that inherited
# synchronous_standby_names waits forever, for every commit).
STALL_WARN_S = 10.0
STALL_ABORT_S = 45.0
# SQLSTATEs meaning this connection's server cannot take paysched's work any more: the pool
# drops every connection (a fresh one finds the primary through target_session_attrs).
# 25006: read-only transaction (a standby, or a primary demoted under us); 57P01-57P03:
# terminated by the administrator, crash shutdown, server cannot connect now.
_GONE_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})


_SYNC_HINT = (
    ". A COMMIT waits for a synchronous standby: on a promoted standby that kept "
    "synchronous_standby_names, and has no standby of its own, it waits forever"
)


class _Health:
    """Per engine: say once when the database stops answering, and once when it is back;
    and watch statements in flight for a server that stopped answering (see STALL_*)."""

    def __init__(self, warn_s: float = STALL_WARN_S, abort_s: float = STALL_ABORT_S) -> None:
        self.warn_s = warn_s
        self.abort_s = abort_s
        self._lock = threading.Lock()
        self._down_since: float | None = None
        # An outage is of a database that answered before: a first connect that fails is the
        # caller's to report (a command says it in its one line, a service waits for it).
        self._answered = False
        # id(DBAPI connection) -> [connection, since, what, warned]
        self._busy: dict[int, list[Any]] = {}
        self._watcher: threading.Thread | None = None

    def failed(self, problem: str, since: float | None = None) -> None:
        with self._lock:
            if self._down_since is not None or not self._answered:
                return
            self._down_since = time.monotonic() if since is None else since
        log.warning("database unavailable (%s): in-flight work is retried; reconnecting", problem)

    def connected(self, dbapi_conn: Any) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
            self._answered = True
        if since is not None:
            log.info(
                "database answers again after %.1f s (%s)",
                time.monotonic() - since,
                _where(dbapi_conn),
            )

    def begin(self, dbapi_conn: Any, what: str) -> None:
        with self._lock:
            self._busy[id(dbapi_conn)] = [dbapi_conn, time.monotonic(), what, False]
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(
                    target=self._watch, name="paysched-db-watch", daemon=True
                )
                self._watcher.start()

    def end(self, dbapi_conn: Any) -> None:
        with self._lock:
            self._busy.pop(id(dbapi_conn), None)

    def _limit(self, what: str) -> float:
        # A ping waits on no lock: one unanswered past the warning is a server that is gone.
        return self.warn_s if what == "ping" else self.abort_s

    def _watch(self) -> None:
        """Runs while something is in flight (a thread per engine, only when needed)."""
        while True:
            time.sleep(min(1.0, self.warn_s / 2))
            now = time.monotonic()
            with self._lock:
                if not self._busy:
                    self._watcher = None
                    return
                stalled = [e for e in self._busy.values() if now - e[1] >= self.warn_s]
                cut = [e for e in stalled if now - e[1] >= self._limit(e[2])]
                for entry in cut:
                    del self._busy[id(entry[0])]
                warn = [e for e in stalled if not e[3] and e not in cut]
                for entry in warn:
                    entry[3] = True
            for conn, since, what, _ in warn:
                hint = _SYNC_HINT if what == "COMMIT" else ""
                log.warning(
                    "database has not answered a %s for %.0f s (%s); cut off after %.0f s%s",
                    what,
                    now - since,
                    _where(conn),
                    self._limit(what),
                    hint,
                )
            for conn, since, what, _ in cut:
                self.failed(
                    f"no answer to a {what} for {now - since:.0f} s from {_where(conn)}", since
                )
                _shut_down(conn)


def _where(dbapi_conn: Any) -> str:
    try:
        return f"{dbapi_conn.info.host}:{dbapi_conn.info.port}"
    except Exception:  # a closed or broken connection has no host to name
        return "database"


def _shut_down(dbapi_conn: Any) -> None:
    """Shut the connection's socket: the thread blocked on it wakes with a broken-connection
    error, which invalidates the pool like any disconnect. (A cancel request would need the
    server to answer, which is what it stopped doing.)"""
    try:
        fd = os.dup(dbapi_conn.pgconn.socket)
    except Exception:  # already closed
        return
    with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watch_postgresql(engine: Engine) -> None:
    health = _Health()
    engine.pool_health = health  # type: ignore[attr-defined]  # for tests

    def dbapi(conn: Connection) -> Any:
        return conn.connection.dbapi_connection

    # The pool's pre-ping runs outside the statement events; it is where a connection to a
    # server that stopped answering is first used after an idle spell, and hung there.
    ping = engine.dialect.do_ping

    def watched_ping(dbapi_conn: Any) -> bool:
        health.begin(dbapi_conn, "ping")
        try:
            return ping(dbapi_conn)
        finally:
            health.end(dbapi_conn)

    engine.dialect.do_ping = watched_ping  # type: ignore[method-assign,assignment]

    # Timed around the COMMIT itself: a "commit" event has no counterpart after it, and a
    # connection kept checked out after its commit would have counted as a COMMIT in flight.
    commit = engine.dialect.do_commit

    def watched_commit(proxied: Any) -> None:
        raw = getattr(proxied, "dbapi_connection", proxied)  # the pool's proxy, or raw
        health.begin(raw, "COMMIT")
        try:
            commit(proxied)
        finally:
            health.end(raw)

    engine.dialect.do_commit = watched_commit  # type: ignore[method-assign,assignment]

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Connection, _c: Any, statement: str, *_args: Any) -> None:
        health.begin(dbapi(conn), statement.split(None, 1)[0] if statement else "statement")

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Connection, *_args: Any) -> None:
        health.end(dbapi(conn))

    @event.listens_for(engine.pool, "checkin")
    def _checkin(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None:
            health.end(dbapi_conn)

    @event.listens_for(engine.pool, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        health.connected(dbapi_conn)

    @event.listens_for(engine, "handle_error")
    def _error(ctx: Any) -> None:
        conn = ctx.connection
        if conn is not None and not conn.invalidated and conn.connection.dbapi_connection:
            health.end(conn.connection.dbapi_connection)
        orig = ctx.original_exception
        if getattr(orig, "sqlstate", None) in _GONE_SQLSTATES:
            ctx.is_disconnect = True
        import psycopg

        # A failed connect (every host refused, timed out or was read-only) has no sqlstate.
        if ctx.is_disconnect or (conn is None and isinstance(orig, psycopg.OperationalError)):
            health.failed(str(orig).strip().splitlines()[0][:200] if str(orig) else "disconnect")


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
