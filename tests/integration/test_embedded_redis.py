"""The embedded Valkey: persistent, private, and gone when paysched dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import redis

from paysched.app import resolve_redis
from paysched.config import Settings
from paysched.redis_server import EmbeddedRedis, free_port
from tests.conftest import wait_for_sync


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_configuration_and_persistence(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert str(client.config_get("bind")["bind"]).startswith("127.0.0.1")
        assert server.process is not None
        assert int(client.info("server")["process_id"]) == server.process.pid
        client.set("paysched:probe", "kept")
        client.close()
    finally:
        server.stop()
    again = EmbeddedRedis(tmp_path)
    url = again.start()
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.get("paysched:probe") == "kept"  # AOF survived the restart
        client.close()
    finally:
        again.stop()


def test_second_process_shares_the_live_server(tmp_path: Path) -> None:
    owner = EmbeddedRedis(tmp_path)
    owner.start()
    try:
        guest = EmbeddedRedis(tmp_path)
        assert guest.start() == owner.url
        assert guest.shared
        guest.stop()  # a guest never stops the owner's server
        assert owner.process is not None and alive(owner.process.pid)
    finally:
        owner.stop()


def test_no_orphan_after_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from paysched.redis_server import EmbeddedRedis
        server = EmbeddedRedis(Path({str(tmp_path)!r}))
        server.start()
        print(server.process.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    assert alive(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    wait_for_sync(lambda: not alive(server_pid), 10, "the orphaned Valkey to die")
    # The next start replaces it cleanly.
    server = EmbeddedRedis(tmp_path)
    server.start()
    assert server.process is not None and server.process.pid != server_pid
    server.stop()


def test_falls_back_to_embedded_only_when_nothing_answers(tmp_path: Path) -> None:
    nothing = Settings.from_env({"PAYSCHED_DATA_DIR": str(tmp_path)}).with_overrides(
        redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    url, embedded = resolve_redis(nothing)
    try:
        assert embedded is not None and url == embedded.url
    finally:
        if embedded is not None:
            embedded.stop()
    explicit = nothing.with_overrides(redis_explicit=True)
    url, embedded = resolve_redis(explicit)
    assert embedded is None and url == explicit.redis_url  # never second-guess the user
