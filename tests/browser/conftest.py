"""A real browser against a real `paysched run --api`: the system's Chromium (Debian's
`chromium` package) driven by Playwright for Python, which is told where it is
(`executable_path`). Playwright's own browser downloads (`playwright install`) are never used.

One server process per module (scheduler, ledger workers and the API in one process, on its own
SQLite file and Redis key prefix) and one browser per module keep the suite fast; every test
gets a fresh browser context, so cookies never leak between tests.

Without Chromium the browser tests skip on a laptop and fail under CI=true: a browser suite
that CI skipped would be a test that cannot fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from paysched.redis_server import free_port
from tests.conftest import IN_CI, make_env, wait_for_sync
from tests.integration.test_cli import as_json

# Where screenshots for the README go, when PAYSCHED_SCREENSHOTS=1 (normal runs leave the
# tracked files alone).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TAKE_SCREENSHOTS = os.environ.get("PAYSCHED_SCREENSHOTS", "") == "1"
# Playwright's waits (expect, wait_for_*) give up after this many milliseconds.
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)


def chromium_path() -> str | None:
    """The system's Chromium: PAYSCHED_CHROMIUM, else the first of the usual names on PATH."""
    given = os.environ.get("PAYSCHED_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


# Per module, not per session: while Playwright's sync API is open its event loop counts as
# running in this thread, and every asyncio test after it would fail ("Runner.run() cannot be
# called from a running event loop"). The suite has one browser module, so this is one launch.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        reason = "no Chromium on PATH (apt-get install chromium, or set PAYSCHED_CHROMIUM)"
        if IN_CI:
            pytest.fail(f"browser tests need Chromium in CI: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


@dataclass
class Server:
    """A `paysched run --api` process, its environment (for the CLI) and its API keys."""

    url: str
    env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)  # name -> the key itself
    key_ids: dict[str, int] = field(default_factory=dict)

    def create_key(self, name: str, scope: str) -> str:
        made = as_json(self.env, "apikeys", "create", name, "--scope", scope)
        self.keys[name], self.key_ids[name] = made["key"], made["id"]
        key: str = made["key"]
        return key

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One /v1 call with the write key; the answer's JSON (a 2xx is required)."""
        headers = {"Authorization": f"Bearer {self.keys['writer']}"}
        r = httpx.request(method, self.url + path, json=body, headers=headers, timeout=30)
        assert r.is_success, (method, path, r.status_code, r.text)
        return r.json()

    def schedule(self, payer: str = "alice", payee: str = "bob", **body: str) -> int:
        """A one-time payment (due in a day unless `in`/`at` says otherwise): its id."""
        base = {"from": payer, "to": payee, "amount": "2.50", "in": "1d"}
        pid: int = self.api("POST", "/v1/payments", base | body)["id"]
        return pid


@pytest.fixture(scope="module")
def server(shared_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `paysched run --api` on a free port with the ledger executor: scheduler, workers
    and the dashboard in one process, on its own SQLite database and Redis prefix."""
    root = tmp_path_factory.mktemp("browser-server")
    prefix = f"paysched-test-{uuid.uuid4().hex[:12]}"
    env = make_env(
        DATABASE_URL=f"sqlite:///{root / 'paysched.db'}",
        REDIS_URL=shared_redis_url,
        PAYSCHED_QUEUE_PREFIX=prefix,
        PAYSCHED_DATA_DIR=str(root / "data"),
        PAYSCHED_EXECUTOR="ledger",
    )
    port = free_port()
    found = Server(url=f"http://127.0.0.1:{port}", env=env)
    found.create_key("writer", "write")
    found.create_key("reader", "read")
    log = root / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paysched", "run", f"--api=127.0.0.1:{port}"],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def up() -> bool:
        assert process.poll() is None, f"paysched run exited: {log.read_text()[-3000:]}"
        try:
            return httpx.get(found.url + "/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for_sync(up, 60, "paysched run --api to be ready")
        for name in ("alice", "bob"):
            found.api("POST", "/v1/accounts", {"name": name})
        found.api("POST", "/v1/accounts/alice/deposits", {"amount": "1000.00"})
        yield found
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        client = redis.Redis.from_url(shared_redis_url)
        with contextlib.closing(client):
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert not any(key in text for key in found.keys.values()), "a key in the server's log"


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1280, "height": 900})
    made.set_default_timeout(WAIT_MS)
    yield made
    made.close()


def sign_in(page: Page, server: Server, name: str) -> None:
    """Through the login form, as a person does; lands on the overview."""
    page.goto(server.url + "/dashboard/login")
    page.get_by_label("API key").fill(server.keys[name])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/dashboard/")


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    if TAKE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)
