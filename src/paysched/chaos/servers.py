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
from typing import Any

from paysched.redis_client import SentinelTarget
from paysched.redis_server import RedisProcess, free_port, redis_binary


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


class SentinelProcess(RedisProcess):
    """A `redis-server --sentinel` watching `master` at `primary_port` (quorum 2 of 3).

    Fast timings so that a test sees a failover within seconds: the primary is down after 1 s
    without an answer, a failover that stalls is retried after 5 s."""

    def __init__(self, workdir: Path, master: str, primary_port: int) -> None:
        super().__init__(workdir)
        self.master = master
        self.primary_port = primary_port

    def start(self, timeout: float = 30.0) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "sentinel.conf"  # sentinel rewrites its file: one of its own
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.master} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.master} 1000\n"
            f"sentinel failover-timeout {self.master} 5000\n"
            f"sentinel parallel-syncs {self.master} 1\n"
        )
        self.process = subprocess.Popen(
            [self.binary or redis_binary(), str(conf), "--sentinel"],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self.url


class SentinelRedis:
    """A Redis primary, one replica and three sentinels, all on free ports in `workdir`.

    `fail_over()` SIGKILLs the primary and waits until the sentinels have promoted the replica;
    `reattach()` brings the killed server back as a replica of the new primary, so that the
    next failover has somewhere to go."""

    MASTER = "paysched"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._extra = extra = ("--maxmemory-policy", "noeviction", "--hz", "100")
        primary = RedisProcess(workdir / "node-a", appendonly=True, extra=extra)
        replica = RedisProcess(
            workdir / "node-b",
            appendonly=True,
            extra=(*extra, "--replicaof", "127.0.0.1", str(primary.port)),
        )
        self.nodes = [primary, replica]
        self.sentinels = [
            SentinelProcess(workdir / f"sentinel-{i}", self.MASTER, primary.port) for i in range(3)
        ]
        self.down: RedisProcess | None = None  # the node fail_over() killed

    @property
    def url(self) -> str:
        """What REDIS_SENTINELS + REDIS_SENTINEL_MASTER become (paysched.redis_client)."""
        nodes = tuple(("127.0.0.1", s.port) for s in self.sentinels)
        return SentinelTarget(nodes=nodes, master=self.MASTER).url()

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": self.MASTER,
        }

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self._wait_settled(self.nodes[0].port, 30)

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers sees it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(Exception), contextlib.closing(sentinel.client(1)) as c:
                addr = c.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER
                )
                if addr:
                    return int(addr[1])
        return None

    def primary(self) -> RedisProcess:
        port = self.primary_port()
        return next(n for n in self.nodes if n.port == port)

    def _wait_settled(self, port: int, timeout: float) -> None:
        """Until every sentinel names `port` primary, knows the others and one live replica."""

        def settled() -> bool:
            for sentinel in self.sentinels:
                try:
                    with contextlib.closing(sentinel.client(1)) as c:
                        state: Any = c.sentinel_master(self.MASTER)
                except Exception:
                    return False
                if int(state["port"]) != port or int(state["num-other-sentinels"]) < 2:
                    return False
                if int(state["num-slaves"]) < 1 or state.get("is_sdown") or state.get("is_odown"):
                    return False
            replica = next(n for n in self.nodes if n.port != port)
            if replica.process is None:
                return False
            with contextlib.suppress(Exception), contextlib.closing(replica.client(1)) as c:
                return bool(c.info("replication").get("master_link_status") == "up")
            return False

        wait_until(settled, timeout, f"the sentinels to settle on port {port}")

    def fail_over(self, timeout: float = 60.0) -> float:
        """SIGKILL the primary; seconds until the replica answers as the new primary."""
        old = self.primary()
        started = time.monotonic()
        old.kill()
        self.down = old
        new = next(n for n in self.nodes if n is not old)

        def promoted() -> bool:
            if self.primary_port() != new.port:
                return False
            with contextlib.suppress(Exception), contextlib.closing(new.client(1)) as c:
                return bool(c.info("replication").get("role") == "master")
            return False

        wait_until(promoted, timeout, "the sentinels to promote the replica")
        return time.monotonic() - started

    def reattach(self, timeout: float = 60.0) -> None:
        """Start the killed server again as a replica of the current primary."""
        old = self.down
        if old is None:
            return
        primary = self.primary()
        # Its AOF holds the old primary's data: dropped, the new primary's is copied over.
        shutil.rmtree(old.workdir, ignore_errors=True)
        back = RedisProcess(
            old.workdir,
            appendonly=True,
            port=old.port,
            extra=(*self._extra, "--replicaof", "127.0.0.1", str(primary.port)),
        )
        back.start()
        self.nodes[self.nodes.index(old)] = back
        self.down = None
        self._wait_settled(primary.port, timeout)

    def flushall(self) -> None:
        self.primary().flushall()

    def kill_clients(self) -> int:
        return self.primary().kill_clients()

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.nodes]:
            with contextlib.suppress(Exception):
                proc.stop()

    def destroy(self) -> None:
        for proc in [*self.sentinels, *self.nodes]:
            with contextlib.suppress(Exception):
                proc.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
