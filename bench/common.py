"""Helpers shared by the benchmarks: a private redis-server, fresh databases, statistics and the
environment a report records. Used by bench/lateness.py and bench/run.py."""

from __future__ import annotations

import contextlib
import importlib.metadata
import secrets
import shutil
import sqlite3
import statistics
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from paysched.errors import BackendUnavailable
from paysched.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- private redis-server ------------------------------------------------------------------------


class PrivateRedis:
    """A throw-away `redis-server` on 127.0.0.1 at a free port: no RDB, no AOF, its working
    directory in the bench's temp dir. Killed by the kernel if the bench dies (Linux)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server: RedisProcess | None = None
        self.url = ""

    def start(self) -> str:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server not found on PATH; install it or pass --redis-url")
        for _ in range(5):  # the free port can be taken between probe and bind: try again
            server = RedisProcess(
                self.workdir,
                tied_to_parent=True,  # started before any thread exists
                extra=(
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                    "--logfile",
                    str(self.workdir / "redis.log"),
                ),
            )
            try:
                self.url = server.start(timeout=10.0)
            except BackendUnavailable:
                server.stop()
                continue
            self.server = server
            return self.url
        raise SystemExit(f"could not start redis-server (see {self.workdir / 'redis.log'})")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


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


def percentile(sorted_values: Sequence[float], p: float) -> float:
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
        return {
            "count": 0,
            "min": None,
            "mean": None,
            "p50": None,
            "p95": None,
            "p99": None,
            "max": None,
        }
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
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 30.0) -> None:
    """SIGTERM a measured process if it still runs; SIGKILL it after `grace_s`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


async def seed_accounts(http: Any) -> None:
    """alice (1,000,000.00 USD) and bob, through the API the benchmark measures."""
    for name in ("alice", "bob"):
        (await http.post("/v1/accounts", json={"name": name})).raise_for_status()
    deposit = await http.post("/v1/accounts/alice/deposits", json={"amount": "1000000.00"})
    deposit.raise_for_status()
