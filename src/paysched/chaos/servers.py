"""Servers the harness owns: a redis-server with AOF and a PostgreSQL cluster, on free ports.

Only these are ever restarted, flushed, stopped or have their clients killed; the machine's
shared servers are never touched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paysched.redis_client import SentinelTarget
from paysched.redis_server import RedisProcess, free_port, redis_binary
from paysched.supervisor import child_pids


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
        super().__init__(
            workdir, appendonly=True, extra=("--maxmemory-policy", "noeviction", "--hz", "100")
        )


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
            [*as_user, str(self.bindir / args[0]), *args[1:]],
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')[-500:]}")

    def make_datadir(self) -> None:
        self.datadir.mkdir(parents=True, mode=0o700)
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.datadir, user.pw_uid, user.pw_gid)
            # Let postgres reach its data dir: search (not read) permission on the temp dirs
            # above it, and never on a directory outside the temp dir.
            tmp = Path(tempfile.gettempdir()).resolve()
            for parent in self.datadir.resolve().parents:
                if parent == tmp or tmp not in parent.parents:
                    break
                parent.chmod(parent.stat().st_mode | 0o711)
            self.datadir.parent.chmod(0o711)

    def init(self) -> None:
        self.make_datadir()
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


class ReplicatedPostgres:
    """A primary and a streaming standby on free ports, with synchronous replication: every
    commit the primary acknowledges is on the standby too (synchronous_commit=on, the
    default, with synchronous_standby_names='*'), so a failover loses nothing.

    Two ports are fixed for the pair's life and `url()` names both; the roles move between
    them. `fail_over()` stops the primary (-m immediate: a crash) and promotes the standby;
    `reattach()` puts a new standby, copied from the promoted primary, on the dead one's port
    (its data directory is discarded: a fresh pg_basebackup is simpler and surer than
    pg_rewind, and costs a second on a test-sized cluster).

    The promoted server runs alone and therefore asynchronously until `reattach()`: with
    synchronous_standby_names still set, and no standby, every commit would wait forever.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.primary = PostgresCluster(workdir / "node-0")
        self.standby: PostgresCluster | None = None
        self.ports = (self.primary.port, free_port())
        self.generation = 0
        self.old_primary: PostgresCluster | None = None
        self.frozen: list[int] = []  # the old primary's processes, stopped by fail_over(hang)

    def url(self, db: str = "paysched") -> str:
        """libpq's multi-host URL: whichever of the two accepts writes is the one used."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"postgresql://postgres@{hosts}/{db}?target_session_attrs=read-write"

    def start(self) -> None:
        self.primary.init()
        self._add_standby(self.ports[1])

    def _add_standby(self, port: int) -> None:
        self.generation += 1
        standby = PostgresCluster(self.workdir / f"node-{self.generation}")
        standby.port = port
        standby.make_datadir()
        # -R writes primary_conninfo and standby.signal; -X stream copies the WAL written
        # during the copy, so the standby starts consistent without archive or slot.
        self.primary._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(standby.datadir),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
        )
        # The copy holds the primary's log and socket lock file (both live in its data dir).
        for leftover in [standby.datadir / "server.log", *standby.datadir.glob(".s.PGSQL.*")]:
            leftover.unlink(missing_ok=True)
        standby.start()
        self.standby = standby
        # Only now: set before the copy, the standby would inherit it and, once promoted
        # alone, hang every commit waiting for a standby of its own.
        self._sql(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        self._sql(self.primary, "SELECT pg_reload_conf()")
        wait_until(lambda: self._sync_state() == "sync", 30, "the standby to be synchronous")

    def _sync_state(self) -> str | None:
        rows = self._sql(self.primary, "SELECT sync_state FROM pg_stat_replication")
        return str(rows[0][0]) if rows else None

    @staticmethod
    def _sql(node: PostgresCluster, query: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(node.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query)
            return list(cursor.fetchall()) if cursor.description else []

    def fail_over(self, hang: bool = False) -> float:
        """Crash the primary, promote the standby and wait until it takes writes. Returns the
        seconds from the stop to the first write the promoted server accepted.

        `hang`: instead of stopping it, freeze the old primary (SIGSTOP of all its processes):
        its connections stay open and never answer, as when its machine hangs. It is killed,
        never resumed (two primaries), when the pair is destroyed."""
        if self.standby is None:
            raise RuntimeError("no standby to promote")
        began = time.monotonic()
        if hang:
            pid = int((self.primary.datadir / "postmaster.pid").read_text().split()[0])
            self.frozen = [pid, *child_pids(pid)]
            for each in self.frozen:
                os.kill(each, signal.SIGSTOP)
        else:
            self.primary.stop("immediate")
        promoted = self.standby
        promoted._run("pg_ctl", "-D", str(promoted.datadir), "-w", "promote")
        self._sql(promoted, "ALTER SYSTEM RESET synchronous_standby_names")
        self._sql(promoted, "SELECT pg_reload_conf()")
        wait_until(
            lambda: self._sql(promoted, "SELECT pg_is_in_recovery()") == [(False,)],
            30,
            "the promoted standby to leave recovery",
        )
        elapsed = time.monotonic() - began
        if not hang:
            self.primary.destroy()
        self.old_primary, self.primary, self.standby = self.primary, promoted, None
        return elapsed

    def reattach(self) -> None:
        """A new synchronous standby on the port the failed primary had."""
        if self.standby is not None:
            raise RuntimeError("a standby is attached already")
        self._discard_old_primary()
        port = next(port for port in self.ports if port != self.primary.port)
        self._add_standby(port)

    def _discard_old_primary(self) -> None:
        for each in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        self.frozen = []
        if self.old_primary is not None:
            self.old_primary.running = False  # killed or stopped: nothing left to stop
            shutil.rmtree(self.old_primary.datadir, ignore_errors=True)
            self.old_primary = None

    def destroy(self) -> None:
        self._discard_old_primary()
        for node in (self.standby, self.primary):
            if node is not None:
                node.destroy()
