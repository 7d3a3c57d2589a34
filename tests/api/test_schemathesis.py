"""Schemathesis against the running API: a real `paysched run --api` process, every
operation, every check, with a valid admin key. No server error, no response outside the
schema, no status the document does not list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from paysched.redis_server import free_port
from tests.conftest import wait_for_sync
from tests.integration.test_cli import paysched

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_nothing(env: dict[str, str], tmp_path: Path) -> None:
    env = env | {"PAYSCHED_API_RATE_LIMIT": "100000"}
    key = json.loads(
        paysched(env, "apikeys", "create", "schemathesis", "--scope", "admin", "--json").stdout
    )["key"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "paysched", "run", "--api", f"127.0.0.1:{port}"],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:

            def ready() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for_sync(ready, 60, "the API to answer")
            # The schema's examples name alice and bob: with them, examples reach real work.
            for name in ("alice", "bob"):
                assert client.post("/v1/accounts", json={"name": name}).status_code == 201
                client.post(f"/v1/accounts/{name}/deposits", json={"amount": "1000.00"})
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(CONFIG),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--seed",
                "20261129",
                "--no-shrink",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        summary = run.stdout[run.stdout.rfind("SUMMARY") :] if "SUMMARY" in run.stdout else ""
        print(summary or run.stdout[-4000:])
        assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
