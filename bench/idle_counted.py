"""`paysched` with SQL counters: runs the CLI in this process after hooking every SQLAlchemy
engine, and writes what its engines did to the file in PAYSCHED_BENCH_SQL_COUNTS every 0.2 s.

bench/measure_idle.py starts `paysched run` through this. The counts come from the process's
own engines, so they read the same on SQLite and PostgreSQL (pg_stat_database flushes a
backend's counters only every second or when it goes idle for 10 s: a window's edges blur).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

COUNTS = {"statements": 0, "commits": 0, "write_begins": 0, "rollbacks": 0}
_lock = threading.Lock()


def _count(name: str) -> None:
    with _lock:
        COUNTS[name] += 1


@event.listens_for(Engine, "before_cursor_execute")
def _statement(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    _count("statements")


@event.listens_for(Engine, "begin")
def _begin(conn: Any) -> None:
    # paysched marks connections that only read (db.engine.READ_ONLY); any other transaction
    # may write (on SQLite it is a BEGIN IMMEDIATE: it takes the write lock).
    if not conn.get_execution_options().get("paysched_read_only", False):
        _count("write_begins")


@event.listens_for(Engine, "commit")
def _commit(conn: Any) -> None:
    _count("commits")


@event.listens_for(Engine, "rollback")
def _rollback(conn: Any) -> None:
    _count("rollbacks")


def _writer(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    while True:
        with _lock:
            snapshot = {**COUNTS, "monotonic": time.monotonic()}
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(path)
        time.sleep(0.2)


if __name__ == "__main__":
    threading.Thread(
        target=_writer, args=(Path(os.environ["PAYSCHED_BENCH_SQL_COUNTS"]),), daemon=True
    ).start()
    from paysched.cli import main

    sys.argv[0] = "paysched"
    main()
