"""Servers the harness owns: a redis-server with AOF and a PostgreSQL cluster, on free ports.

Only these are ever restarted, flushed, stopped or have their clients killed; the machine's
shared servers are never touched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from paysched.redis_server import RedisProcess, free_port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class RedisServer(RedisProcess):
    """redis-server with `appendonly yes` in its own directory; restartable on the same port
    (SIGKILL and start again: the AOF is replayed), flushable, its clients killable."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, appendonly=True,
                         extra=("--maxmemory-policy", "noeviction", "--hz", "100"))  # fmt: skip


def pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")


class PostgresCluster:
    """A throw-away cluster: initdb into `datadir`, pg_ctl start/stop on a free port."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.port = free_port()
        self.bindir = pg_bindir()
        self.running = False

    def url(self, db: str = "paysched") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        # PostgreSQL refuses to run as root: then run its tools as the `postgres` user.
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*as_user, str(self.bindir / args[0]), *args[1:]], timeout=timeout,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')[-500:]}")

    def init(self) -> None:
        self.datadir.mkdir(parents=True)
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.datadir, user.pw_uid, user.pw_gid)
            self.datadir.parent.chmod(0o711)  # the temp dir: let postgres reach its data dir
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-N")
        self.start()
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE paysched")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        log = str(self.datadir / "server.log")
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", log, "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")
        self.running = False

    def terminate_backends(self) -> int:
        """pg_terminate_backend of every paysched connection (not ours, not the system's)."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'paysched' AND pid <> pg_backend_pid()"
            ).fetchall()
        return sum(1 for (ok,) in rows if ok)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.running or (self.datadir / "postmaster.pid").exists():
                self.running = True
                self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
