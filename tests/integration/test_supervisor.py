"""Every core: `run` / `worker` / `serve` as supervised groups of real processes, with real
signals. The group pays each payment once, restarts a child that dies, stops within the grace
on SIGTERM, and leaves no process behind when its parent is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from paysched.redis_server import free_port
from paysched.supervisor import child_pids
from tests.conftest import wait_for_sync

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
both = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def paysched(env: dict[str, str], *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "paysched", *args, "--json"],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def children(pid: int) -> set[int]:
    return set(child_pids(pid))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def payments(env: dict[str, str], count: int) -> list[int]:
    paysched(env, "accounts", "create", "alice")
    paysched(env, "accounts", "create", "bob")
    paysched(env, "accounts", "deposit", "alice", "1000.00")
    return [schedule_one(env) for _ in range(count)]


def schedule_one(env: dict[str, str]) -> int:
    args = ("--from", "alice", "--to", "bob", "--amount", "1.00", "--in", "1s")
    return int(paysched(env, "schedule", *args)["id"])


def succeeded(env: dict[str, str]) -> int:
    return int(paysched(env, "stats")["occurrences"]["succeeded"])


def start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "paysched", *args],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@both
def test_a_group_pays_once_restarts_a_dead_child_and_stops_on_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = env | {"PAYSCHED_CONCURRENCY": "4"}
    first = payments(env, 6)
    log = tmp_path / "run.log"
    group = start(env, log, "run", "--processes", "2")
    try:
        wait_for_sync(lambda: len(children(group.pid)) == 2, 30, "two worker processes")
        wait_for_sync(lambda: log.read_text().count("worker started") == 2, 60, "both pools")
        # The total concurrency is shared, not multiplied: 2 + 2; one scheduler, not two.
        assert log.read_text().count("concurrency 2") == 2, log.read_text()
        # A process logs its scheduler's start just after its pool's: wait for it, and count
        # once the first payments are paid (a second scheduler would have said so by then).
        wait_for_sync(lambda: "scheduler started" in log.read_text(), 30, "the scheduler")
        wait_for_sync(lambda: succeeded(env) == len(first), 60, "the first payments")
        assert log.read_text().count("scheduler started") == 1, log.read_text()
        victim = max(children(group.pid))
        os.kill(victim, signal.SIGKILL)
        wait_for_sync(lambda: "died (signal SIGKILL)" in log.read_text(), 20, "the death seen")
        wait_for_sync(
            lambda: len(children(group.pid) - {victim}) == 2, 30, "the child started again"
        )
        more = [schedule_one(env) for _ in range(4)]
        wait_for_sync(lambda: succeeded(env) == len(first) + len(more), 60, "the later ones")
        kids = children(group.pid)
    finally:
        group.send_signal(signal.SIGTERM)
        code = group.wait(timeout=60)
    assert code == 0, log.read_text()
    assert not any(alive(pid) for pid in kids)
    # Each payment moved its money once.
    assert paysched(env, "accounts", "show", "bob")["balance"] == "10.00"
    assert "Traceback" not in log.read_text()


@sqlite_only
def test_sigkill_of_the_parent_leaves_no_orphan(env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    group = start(env, log, "worker", "--processes", "2")
    try:
        wait_for_sync(lambda: len(children(group.pid)) == 2, 30, "two worker processes")
        wait_for_sync(lambda: log.read_text().count("worker started") == 2, 60, "both pools")
        # `paysched worker` runs no scheduler, in any of its processes.
        assert "scheduler started" not in log.read_text()
        kids = children(group.pid)
    finally:
        group.kill()
        group.wait(timeout=30)
    wait_for_sync(lambda: not any(alive(pid) for pid in kids), 10, "the children gone")


@sqlite_only
def test_a_groups_metrics_add_up_its_children(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    ids = payments(env, 4)
    metrics_env = env | {
        "PAYSCHED_METRICS_LISTEN": f"127.0.0.1:{port}",
        "PAYSCHED_CONCURRENCY": "2",
    }
    group = start(metrics_env, tmp_path / "run.log", "run", "--processes", "2")

    def scraped() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics").text
        except httpx.TransportError:
            return ""

    try:
        line = f'paysched_occurrence_outcomes_total{{outcome="succeeded"}} {len(ids)}.0'
        wait_for_sync(lambda: line in scraped(), 60, "every payment counted once")
        assert f"paysched_start_lateness_seconds_count {len(ids)}.0" in scraped()
    finally:
        group.send_signal(signal.SIGTERM)
        assert group.wait(timeout=60) == 0


@sqlite_only
def test_serve_workers_share_one_port(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    group = start(env, log, "serve", "--port", str(port), "--workers", "2")
    try:
        wait_for_sync(lambda: len(children(group.pid)) == 2, 30, "two API processes")

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for_sync(healthy, 60, "the API")
        # New connections each: the kernel spreads them over both processes' accepts.
        assert all(healthy() for _ in range(20))
    finally:
        group.send_signal(signal.SIGTERM)
        assert group.wait(timeout=60) == 0, log.read_text()


@sqlite_only
def test_a_childs_configuration_error_stops_the_group(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paysched", "worker", "--processes", "2"],
        env=os.environ | env | {"PAYSCHED_EXECUTOR": "no_such_module:factory"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "PAYSCHED_EXECUTOR" in result.stderr and "Traceback" not in result.stderr
