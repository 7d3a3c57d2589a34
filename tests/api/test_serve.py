"""`paysched serve`, `run --api` and `apikeys` as a user runs them: real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from paysched.redis_server import free_port
from tests.conftest import wait_for_sync
from tests.integration.test_cli import one_line_error, paysched

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], httpx.Client]:
    """`paysched serve` on a free port, answering, and a client for it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "paysched", "serve", "--port", str(port)],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def up() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for_sync(up, 60, "the API")
    except BaseException:
        client.close()
        server.kill()
        server.communicate()
        raise
    return server, client


def test_serve_answers_and_stops_cleanly_on_sigterm(env: dict[str, str]) -> None:
    key = json.loads(
        paysched(env, "apikeys", "create", "ops", "--scope", "write", "--json").stdout
    )["key"]
    server, client = start_serve(env)
    try:
        with contextlib.closing(client):
            assert client.get("/readyz").json()["checks"] == {"database": "ok", "redis": "ok"}
            auth = {"Authorization": f"Bearer {key}"}
            created = client.post("/v1/accounts", json={"name": "alice"}, headers=auth)
            assert created.status_code == 201, created.text
            assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
            assert client.get("/docs").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr and key not in stderr
    # The API wrote through the same database the CLI reads.
    assert (
        json.loads(paysched(env, "accounts", "show", "alice", "--json").stdout)["name"] == "alice"
    )


def test_sigterm_with_a_dashboard_stream_open_exits_promptly(env: dict[str, str]) -> None:
    """uvicorn's graceful shutdown waits for open responses: the dashboard's endless event
    stream must end when the server stops, or `serve` would hang for its whole grace time."""
    key = json.loads(paysched(env, "apikeys", "create", "ops", "--scope", "read", "--json").stdout)[
        "key"
    ]
    # A grace far longer than the wait below: a stream that outlived SIGTERM would hold the
    # server past it (no wall-clock bound on a fast stop is needed to see that).
    server, client = start_serve(env | {"PAYSCHED_SHUTDOWN_GRACE": "300s"})
    try:
        with contextlib.closing(client):
            # Signed in as a browser is: the login form, then the session cookie it sets.
            origin = {"Origin": str(client.base_url)}
            login = client.post("/dashboard/login", data={"key": key}, headers=origin)
            assert login.status_code == 303, login.text
            cookie = {"Cookie": f"paysched_session={login.cookies['paysched_session']}"}
            with client.stream("GET", "/dashboard/events", headers=cookie) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert any(line == "event: overview" for line in lines)
                server.send_signal(signal.SIGTERM)
                for _ in lines:  # the stream ends as the server stops
                    pass
            _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr and key not in stderr


def test_a_taken_port_is_one_line_naming_it(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = paysched(env, "serve", "--port", str(port), check=False)
    one_line_error(result, 2, f"cannot listen on 127.0.0.1:{port}")
    one_line_error(paysched(env, "run", "--api", "localhost:http", check=False), 2, "--api")


def test_apikeys_create_list_revoke(env: dict[str, str]) -> None:
    made = json.loads(paysched(env, "apikeys", "create", "bot", "--scope", "read", "--json").stdout)
    assert made["key"].startswith("psk_") and made["scope"] == "read"
    listed = paysched(env, "apikeys", "list", "--json").stdout
    assert made["key"] not in listed and made["key"].split("_", 2)[2] not in listed
    [row] = json.loads(listed)
    assert row["id"] == made["id"] and row["revoked_at"] is None
    assert json.loads(paysched(env, "apikeys", "revoke", str(made["id"]), "--json").stdout)[
        "revoked_at"
    ]
    one_line_error(
        paysched(env, "apikeys", "revoke", str(made["id"]), check=False), 4, "already revoked"
    )
    one_line_error(paysched(env, "apikeys", "revoke", "99", check=False), 3, "no API key")
    one_line_error(paysched(env, "apikeys", "create", "x", "--scope", "root", check=False), 2)


def test_a_worker_process_exposes_its_own_metrics(env: dict[str, str]) -> None:
    """`paysched run` without the API: PAYSCHED_METRICS_LISTEN serves the process's counters,
    and they count the payment its workers ran."""
    paysched(env, "accounts", "create", "alice")
    paysched(env, "accounts", "create", "bob")
    paysched(env, "accounts", "deposit", "alice", "10.00")
    pid = json.loads(
        paysched(
            env,
            "schedule",
            "--from",
            "alice",
            "--to",
            "bob",
            "--amount",
            "1.00",
            "--in",
            "1s",
            "--json",
        ).stdout
    )["id"]
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "paysched", "run"],
        env=os.environ | env | {"PAYSCHED_METRICS_LISTEN": f"127.0.0.1:{port}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.TransportError:
                return ""

        succeeded = 'paysched_occurrence_outcomes_total{outcome="succeeded"} 1.0'
        wait_for_sync(lambda: succeeded in scraped(), 60, f"payment {pid} counted")
        assert "paysched_start_lateness_seconds_count 1.0" in scraped()
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr


def test_a_bad_metrics_address_names_the_variable(env: dict[str, str]) -> None:
    bad = env | {"PAYSCHED_METRICS_LISTEN": "127.0.0.1:http"}
    one_line_error(paysched(bad, "worker", check=False), 2, "PAYSCHED_METRICS_LISTEN")
