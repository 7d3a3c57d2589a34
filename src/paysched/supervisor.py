"""Every core: one command as several supervised processes.

`paysched run`, `worker` and `serve` run their work in N child processes (`paysched child`),
because one Python process uses one core: the GIL serialises the worker's CPU work (BullMQ's
scripts' replies, SQLAlchemy, JSON) however many jobs run at once. The parent only supervises:

- before any child starts, it waits for the database and Redis (saying so once, not once per
  child), brings the schema up to date once, and starts the embedded Valkey when that is the
  Redis to use, so that the server belongs to the parent and outlives any child;
- a child that dies is started again, with a backoff from 1 s to 30 s for one that keeps dying;
  a child that exits with the bad-configuration code (2) stops them all, since a restart would
  fail the same way;
- SIGTERM / SIGINT are passed on as SIGTERM, each child stops gracefully within the shutdown
  grace, and one still running after it (plus a margin) is killed;
- each child asks the kernel for SIGKILL when the parent dies (PR_SET_PDEATHSIG, Linux), so a
  SIGKILL of the parent leaves no orphan: the whole group dies as one process would, which is
  the crash every exactly-once guarantee is tested against;
- counters and histograms of all children are summed through prometheus-client's multiprocess
  mode (a private directory), served by the parent on PAYSCHED_METRICS_LISTEN and by every
  API child's /metrics.

Not multiprocessing or uvicorn's supervisor: each child must be a fresh interpreter (no event
loop, threads or connections inherited through fork), must share one listening socket, and
must stop within paysched's grace; subprocess with `pass_fds` does all three plainly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from paysched.redis_server import die_with_parent

if TYPE_CHECKING:
    from paysched.config import Settings
    from paysched.redis_server import EmbeddedRedis

log = logging.getLogger("paysched.supervisor")

PARENT_ENV = "PAYSCHED_SUPERVISOR_PID"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXIT_CONFIG = 2  # the CLI's code for bad input or configuration: restarting cannot help
RESTART_FIRST_S = 1.0
RESTART_CAP_S = 30.0
# A child that ran this long before dying was healthy: its next restart starts from 1 s again.
HEALTHY_AFTER_S = 60.0
# Beyond the shutdown grace, a child still needs to send its notifications and close.
STOP_MARGIN_S = 15.0


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal positive shares (first ones larger)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is `pid`, from /proc (Linux; elsewhere none): what a
    group is made of, for its tests and the chaos harness."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …": comm may hold spaces, so split after its ')'.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def adopt() -> None:
    """Called first in a child: die with the supervisor. The check after the prctl closes the
    race of a parent that died between starting this process and the prctl taking effect."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    die_with_parent()
    if os.getppid() != int(parent):
        os._exit(1)


async def watch_parent(stop: asyncio.Event, every_s: float = 1.0) -> None:
    """In a child: set `stop` when the supervisor is gone. The kernel's parent-death signal
    does this at once on Linux; elsewhere (no PR_SET_PDEATHSIG) this is what ends an orphan,
    gracefully, within a second."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    while not stop.is_set():
        if os.getppid() != int(parent):
            log.error("the supervisor (pid %s) is gone; stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


@dataclass
class Child:
    name: str
    argv: list[str]  # the whole command line
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    delay: float = RESTART_FIRST_S


@dataclass
class Supervisor:
    children: list[Child]
    grace_s: float
    pass_fds: Sequence[int] = ()
    metrics_dir: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    exit_code: int = 0

    def _start(self, child: Child) -> None:
        # A child serves no metrics port of its own: the parent serves them all.
        env = {k: v for k, v in os.environ.items() if k != "PAYSCHED_METRICS_LISTEN"}
        env |= child.env | {PARENT_ENV: str(os.getpid())}
        if self.metrics_dir is not None:
            env[METRICS_ENV] = self.metrics_dir
        child.process = subprocess.Popen(
            child.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=tuple(self.pass_fds),
        )
        child.started, child.restart_at = time.monotonic(), None
        log.info("%s started (pid %s)", child.name, child.process.pid)

    def _reap(self, child: Child, now: float) -> None:
        """`child` has exited on its own: stop everything, or plan its restart."""
        assert child.process is not None
        code, pid = child.process.returncode, child.process.pid
        child.process = None
        self._forget_metrics(pid)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if code == EXIT_CONFIG:
            log.error(
                "%s (pid %s) stopped on its configuration (%s); stopping all", child.name, pid, how
            )
            self.exit_code = EXIT_CONFIG
            self._stop.set()
            return
        if now - child.started >= HEALTHY_AFTER_S:
            child.delay = RESTART_FIRST_S
        log.error(
            "%s (pid %s) died (%s); starting it again in %g s", child.name, pid, how, child.delay
        )
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, RESTART_CAP_S)

    def _forget_metrics(self, pid: int) -> None:
        if self.metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """Start every child and keep them running until SIGTERM / SIGINT; then stop them."""
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            while not self._stop.wait(0.2):
                now = time.monotonic()
                for child in self.children:
                    if child.process is not None and child.process.poll() is not None:
                        self._reap(child, now)
                    elif child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.exit_code

    def _stop_all(self) -> None:
        running = [c.process for c in self.children if c.process is not None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + STOP_MARGIN_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("pid %s did not stop within the grace; killing it", process.pid)
                process.kill()
                process.wait()


def prepare_backends(cfg: Settings) -> tuple[dict[str, str], EmbeddedRedis | None]:
    """What the children need before they start: the schema up to date (once, here), Redis
    answering; the environment that points them at the Redis chosen here."""
    from paysched.app import until_available
    from paysched.backends import probe_redis, resolve_redis
    from paysched.db.setup import connect_store

    store = connect_store(cfg, pool_size=1)

    async def schema() -> None:
        await asyncio.to_thread(store.ensure_schema, migrate=True)

    try:
        asyncio.run(until_available("the database", schema))
    finally:
        store.close()
    redis_url, embedded = resolve_redis(cfg)
    try:
        asyncio.run(until_available("Redis", lambda: probe_redis(redis_url)))
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    # The embedded server is this process's: the children are told where it is.
    env = {"REDIS_URL": redis_url, "PAYSCHED_EMBEDDED_REDIS": "never"} if embedded else {}
    return env, embedded


def serve_metrics(listen: tuple[str, int], directory: str) -> None:
    """PAYSCHED_METRICS_LISTEN for a group: the sum over its children, live and dead."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from paysched.errors import ConfigError

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    host, port = listen
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        why = f"cannot listen on {host}:{port}: {exc.strerror}"
        raise ConfigError("PAYSCHED_METRICS_LISTEN", why) from None


def child_command(*args: str) -> list[str]:
    """The command line of one process of a `paysched` group."""
    return [sys.executable, "-m", "paysched", "child", *args]


def supervise(
    cfg: Settings,
    children: Sequence[tuple[str, list[str], Mapping[str, str]]],
    pass_fds: Sequence[int] = (),
) -> int:
    """Run `children` (name, command line, extra environment) supervised until SIGTERM /
    SIGINT; the exit code for the command."""
    env, embedded = prepare_backends(cfg)
    metrics_dir = tempfile.mkdtemp(prefix="paysched-metrics-")
    try:
        if cfg.metrics_listen is not None:
            serve_metrics(cfg.metrics_listen, metrics_dir)
        supervisor = Supervisor(
            [Child(name, argv, env | dict(extra)) for name, argv, extra in children],
            cfg.shutdown_grace.total_seconds(),
            pass_fds,
            metrics_dir,
        )
        return supervisor.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if embedded is not None:
            embedded.stop()
