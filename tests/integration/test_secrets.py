"""No secret reaches any output: a real `paysched run` at DEBUG with every secret configured
(Redis password, database password, Telegram bot token, webhook signing secret, a password in
a webhook URL, the provider's token) pays, notifies by Telegram and webhook, and every line
it and the other commands print is searched for each secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from paysched.standin.server import StandinProvider
from tests.conftest import PrivateRedis, make_env, wait_for_sync
from tests.http_peers import Peer, WebhookReceiver

SECRETS = {
    "redis": "SECRETredisPASS",
    "database": "SECRETdbPASS",
    "telegram": "123456:SECRETbotTOKEN_x",
    "signing": "whsec_SECRETsigning",
    "url": "SECRETurlPASS",
    "provider": "SECRETproviderTOKEN",
    "wrong": "SECRETwrongPASS",
}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paysched", *args],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_secret_in_any_output(tmp_path: Path, postgres_url: str) -> None:
    redis_server = PrivateRedis(tmp_path / "redis", password=SECRETS["redis"])
    redis_server.start()
    telegram = Peer(then=(200, {"ok": True, "result": {"message_id": 1}}, {})).start()
    hooks = WebhookReceiver(secret=SECRETS["signing"]).start()
    provider = StandinProvider(tmp_path / "provider.db", token=SECRETS["provider"])
    provider.start()
    server: subprocess.Popen[str] | None = None
    try:
        env = make_env(
            REDIS_HOST="127.0.0.1",
            REDIS_PORT=str(redis_server.port),
            REDIS_PASSWORD=SECRETS["redis"],
            DATABASE_URL=postgres_url.replace("postgres@", f"postgres:{SECRETS['database']}@"),
            PAYSCHED_DATA_DIR=str(tmp_path / "data"),
            PAYSCHED_LOG_LEVEL="DEBUG",
            TELEGRAM_BOT_TOKEN=SECRETS["telegram"],
            TELEGRAM_API_URL=telegram.url,
            PAYSCHED_WEBHOOK_SECRET=SECRETS["signing"],
            PAYSCHED_EXECUTOR="http",
            PAYSCHED_PROVIDER_URL=provider.url,
            PAYSCHED_PROVIDER_TOKEN=SECRETS["provider"],
            PAYSCHED_NOTIFY_POLL="200ms",
            PAYSCHED_WEBHOOK_ALLOW_PRIVATE="1",
        )
        assert "postgres:SECRETdbPASS@" in env["DATABASE_URL"]
        outputs: list[str] = []

        def ok(*args: str) -> str:
            result = run(env, *args)
            outputs.extend([result.stdout, result.stderr])
            assert result.returncode == 0, result.stderr
            return result.stdout

        ok("accounts", "create", "alice")
        ok("accounts", "create", "bob")
        hook = f"webhook:http://hook:{SECRETS['url']}@127.0.0.1:{hooks.port}/hook"
        ok(
            "schedule",
            "--from",
            "alice",
            "--to",
            "bob",
            "--amount",
            "5.00",
            "--in",
            "1s",
            "--notify",
            "telegram:42",
            "--notify",
            hook,
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "paysched", "run"],
            env=os.environ | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for_sync(
            lambda: bool(telegram.requests) and bool(hooks.accepted),
            30,
            "the Telegram and webhook notifications",
        )
        ok("check")
        ok("show", "1")
        ok("stats", "--json")
        wrong = run(env | {"REDIS_PASSWORD": SECRETS["wrong"]}, "stats")
        assert wrong.returncode != 0
        outputs.extend([wrong.stdout, wrong.stderr])
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        outputs.append(out)
        assert server.returncode == 0, out
        # The secrets were in use: the bot token in the API path, the provider's token checked.
        assert SECRETS["telegram"] in telegram.requests[0].path
        assert [c.status for c in provider.charges()] == ["succeeded"]
        everything = "\n".join(outputs)
        assert "HTTP Request: POST" in everything  # httpx's own lines were there, masked
        leaked = {name for name, value in SECRETS.items() if value in everything}
        assert not leaked, [
            line for line in everything.splitlines() if any(SECRETS[n] in line for n in leaked)
        ][:5]
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        provider.stop()
        hooks.stop()
        telegram.stop()
        redis_server.stop()
