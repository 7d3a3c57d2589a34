"""The paysched processes under test: schedulers (`python -m paysched scheduler`) and workers
(`python -m paysched.chaos.node`), each a real subprocess that the harness may SIGKILL.

A process that exits on its own (e.g. it could not reach the database while starting) is
restarted by `supervise`, as a service manager would; those exits are counted, not hidden.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from paysched.supervisor import child_pids

ROLES = {
    "scheduler": [sys.executable, "-m", "paysched", "scheduler"],
    "worker": [sys.executable, "-m", "paysched.chaos.node"],
}


@dataclass
class Proc:
    name: str
    role: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    down_until: float = 0.0  # killed on purpose: restart at this monotonic time
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)  # beside the harness's own
    unexpected_exits: list[int] = field(default_factory=list)
    exit_logs: list[str] = field(default_factory=list)  # the log's last lines at each exit


class Processes:
    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, Proc] = {}
        self._logs: list[IO[bytes]] = []

    def add(
        self,
        role: str,
        count: int,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`count` processes of `role`, running `command` (default: the role's paysched one)."""
        for i in range(count):
            name = f"{role}-{i + 1}"
            self.procs[name] = Proc(name, role, command or ROLES[role], env=dict(env or {}))

    def names(self, role: str) -> list[str]:
        return sorted(n for n, p in self.procs.items() if p.role == role)

    def start(self, name: str) -> None:
        proc = self.procs[name]
        proc.starts += 1
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = (self.logdir / f"{name}.log").open("ab")
        self._logs.append(log)
        proc.process = subprocess.Popen(
            proc.command,
            env=os.environ | self.env | proc.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.down_until = 0.0

    def start_all(self) -> None:
        for name in self.procs:
            self.start(name)

    def sigkill(self, name: str, down_for: float) -> bool:
        """SIGKILL the process; it is restarted `down_for` seconds later by `supervise`."""
        proc = self.procs[name]
        if proc.process is None or proc.process.poll() is not None:
            return False
        proc.process.send_signal(signal.SIGKILL)
        proc.process.wait(timeout=10)
        proc.process = None
        proc.down_until = time.monotonic() + down_for
        return True

    def children(self, name: str) -> list[int]:
        """The live child processes of `name` (a worker group's processes)."""
        proc = self.procs[name]
        if proc.process is None or proc.process.poll() is not None:
            return []
        return child_pids(proc.process.pid)

    def sigkill_child(self, name: str, pick: int) -> int | None:
        """SIGKILL one process of the group `name`; its supervisor starts it again."""
        children = self.children(name)
        if not children:
            return None
        victim = children[pick % len(children)]
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim

    def supervise(self) -> None:
        """Restart what was killed (once its down time is over) or exited on its own."""
        now = time.monotonic()
        for name, proc in self.procs.items():
            if proc.process is not None:
                code = proc.process.poll()
                if code is None:
                    continue
                proc.unexpected_exits.append(code)
                proc.exit_logs.append(self._tail(name))
                proc.process = None
                proc.down_until = now + 0.5
            if now >= proc.down_until:
                self.start(name)

    def revive(self, name: str) -> None:
        """Restart a process killed on purpose now rather than at the end of its down time."""
        proc = self.procs[name]
        proc.down_until = min(proc.down_until, time.monotonic())
        self.supervise()

    def revive_all(self) -> None:
        for proc in self.procs.values():
            proc.down_until = min(proc.down_until, time.monotonic())
        self.supervise()

    def stop_all(self, grace: float = 15.0) -> dict[str, int | None]:
        """SIGTERM everything, wait `grace`, SIGKILL what is left. Returns the exit codes."""
        codes: dict[str, int | None] = {}
        running = {n: p.process for n, p in self.procs.items() if p.process is not None}
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, process in running.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(timeout=10)
        for proc in self.procs.values():
            proc.process = None
            proc.down_until = float("inf")
        for log in self._logs:
            log.close()
        self._logs.clear()
        return codes

    def _tail(self, name: str, lines: int = 6) -> str:
        try:
            text = (self.logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def count_in_logs(self, text: str) -> int:
        """Lines containing `text` in every process's log (faults a process injects itself)."""
        count = 0
        for path in self.logdir.glob("*.log"):
            with path.open(errors="replace") as f:
                count += sum(1 for line in f if text in line)
        return count

    def exit_logs(self) -> dict[str, list[str]]:
        return {n: p.exit_logs for n, p in self.procs.items() if p.exit_logs}

    def unexpected_exits(self) -> dict[str, list[int]]:
        return {n: p.unexpected_exits for n, p in self.procs.items() if p.unexpected_exits}
