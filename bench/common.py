"""Helpers shared by the benchmarks: a private redis-server, fresh databases, statistics and the
environment a report records. Used by bench/lateness.py and bench/run.py."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_PR_SET_PDEATHSIG = 1


# -- private redis-server ------------------------------------------------------------------------


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throw-away `redis-server` on 127.0.0.1 at a free port: no RDB, no AOF, its working
    directory in the bench's temp dir. Killed by the kernel if the bench dies (Linux)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH; install it or pass --redis-url")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the free port can be taken between probe and bind: try again
            port = _free_port()
            args = [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
                "--loglevel", "warning", "--logfile", str(self.workdir / "redis.log"),
            ]  # fmt: skip
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # started before any thread exists
            )
            if self._wait_ready(port, timeout_s=10.0):
                self.url = f"redis://127.0.0.1:{port}/0"
                return self.url
            self.stop()
        raise SystemExit(f"could not start redis-server (see {self.workdir / 'redis.log'})")

    def _wait_ready(self, port: int, timeout_s: float) -> bool:
        assert self.process is not None
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return True
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        info: dict[str, Any] = client.info("server")
        return str(info.get("valkey_version") or info.get("redis_version") or "unknown")
    finally:
        client.close()


# -- fresh databases -----------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, tmp: Path, pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """Yield (SQLAlchemy URL, label) of an empty database, removed again afterwards."""
    if kind == "sqlite":
        path = tmp / f"bench-{secrets.token_hex(4)}.db"
        try:
            yield f"sqlite:///{path}", str(path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    name = f"paysched_bench_{secrets.token_hex(6)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
        yield url, name
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def database_version(kind: str, pg_admin_url: str) -> str:
    if kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else 'unknown'}"


# -- statistics ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[int], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, 'inclusive')."""
    if not sorted_values:
        return float("nan")
    rank = (len(sorted_values) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarise(values: Sequence[int]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "min": None, "mean": None, "p50": None, "p95": None,
                "p99": None, "max": None}  # fmt: skip
    return {
        "count": len(ordered),
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "p50": round(percentile(ordered, 50), 1),
        "p95": round(percentile(ordered, 95), 1),
        "p99": round(percentile(ordered, 99), 1),
        "max": ordered[-1],
    }


def median_of(runs: Sequence[dict[str, Any]], metric: str) -> float | None:
    values = [r["lateness_ms"][metric] for r in runs if r["lateness_ms"][metric] is not None]
    return round(statistics.median(values), 1) if values else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")
