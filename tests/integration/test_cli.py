"""The real command line, as a user runs it: separate processes, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from paysched.redis_server import free_port

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def paysched(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "paysched", *args],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"paysched {args} exited {result.returncode}: {result.stderr}")
    return result


def as_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(paysched(env, *args, "--json").stdout)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_accounts_schedule_run_show_stats(env: dict[str, str]) -> None:
    assert as_json(env, "accounts", "create", "alice") == {
        "name": "alice",
        "currency": "USD",
        "balance": "0.00",
        "remind": None,
    }
    paysched(env, "accounts", "create", "bob", "--currency", "usd")
    assert as_json(env, "accounts", "deposit", "alice", "100.50")["balance"] == "100.50"
    created = as_json(
        env, "schedule", "--from", "alice", "--to", "bob", "--amount", "12.34", "--in", "1s"
    )
    pid = str(created["id"])
    assert created["amount"] == "12.34" and created["state"] == "done"
    server = subprocess.Popen(
        [sys.executable, "-m", "paysched", "run"],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            shown = as_json(env, "show", pid)
            if shown["occurrences"] and shown["occurrences"][0]["state"] == "succeeded":
                break
            time.sleep(0.2)
        (occ,) = shown["occurrences"]
        assert occ["state"] == "succeeded" and shown["status"] == "succeeded"
        assert [a["outcome"] for a in occ["attempts"]] == ["succeeded"]
        assert occ["lateness_ms"] is not None and occ["lateness_ms"] >= 0
        assert as_json(env, "accounts", "show", "bob")["balance"] == "12.34"
        stats = as_json(env, "stats")
        assert set(stats["queue"]) >= {
            "waiting",
            "active",
            "completed",
            "failed",
            "delayed",
            "total",
            "prioritized",
        }
        assert stats["occurrences"]["succeeded"] == 1
        text = paysched(env, "show", pid).stdout
        assert "succeeded" in text and "alice -> bob" in text
        # `list` says what became of each payment, not only where its series is ("done").
        [row] = paysched(env, "list").stdout.splitlines()
        assert row.split()[:2] == [pid, "succeeded"]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    log = server.stderr.read() if server.stderr else ""
    # The seed's log lines: the job was processed by this server, which then stopped cleanly.
    assert f": payment #{pid} (attempt 1)" in log, log
    assert "worker stopped" in log


def test_cancel_before_due(env: dict[str, str]) -> None:
    paysched(env, "accounts", "create", "alice")
    paysched(env, "accounts", "create", "bob")
    pid = str(
        as_json(
            env,
            "schedule",
            "--from",
            "alice",
            "--to",
            "bob",
            "--amount",
            "1",
            "--at",
            "2099-01-01T00:00:00+00:00",
        )["id"]
    )
    paysched(env, "cancel", pid)
    assert as_json(env, "show", pid)["state"] == "cancelled"
    one_line_error(paysched(env, "cancel", pid, check=False), 4, "already cancelled")


def test_schedule_takes_the_payers_currency_unless_told(env: dict[str, str]) -> None:
    paysched(env, "accounts", "create", "eva", "--currency", "EUR")
    paysched(env, "accounts", "create", "finn", "--currency", "EUR")
    created = as_json(
        env, "schedule", "--from", "eva", "--to", "finn", "--amount", "2.50", "--in", "1h"
    )
    assert (created["currency"], created["amount"]) == ("EUR", "2.50")
    one_line_error(
        paysched(
            env,
            "schedule",
            "--from",
            "eva",
            "--to",
            "finn",
            "--amount",
            "1",
            "--in",
            "1h",
            "--currency",
            "USD",
            check=False,
        ),
        2,
        "holds EUR",
    )
    one_line_error(
        paysched(
            env,
            "schedule",
            "--from",
            "ghost",
            "--to",
            "finn",
            "--amount",
            "1",
            "--in",
            "1h",
            check=False,
        ),
        2,
        "ghost",
    )


def test_remind_of_an_account_and_a_payment(env: dict[str, str]) -> None:
    assert as_json(env, "accounts", "create", "hana", "--remind", "24h")["remind"] == "86400s"
    paysched(env, "accounts", "create", "ivo")
    schedule = ["schedule", "--from", "hana", "--to", "ivo", "--amount", "1", "--cron"]
    own = as_json(env, *schedule, "0 9 * * *", "--remind", "90m")
    assert own["remind"] == "5400s"
    default = as_json(env, *schedule, "0 9 * * *")
    assert default["remind"] == "86400s"
    assert as_json(env, "accounts", "set", "hana", "--remind", "off")["remind"] is None
    assert paysched(env, "accounts", "set", "hana", "--remind", "2h").stdout.strip() == (
        "hana: reminders 7200s"
    )


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (["schedule", "--from", "a", "--to", "b", "--amount", "ten", "--in", "1s"], 2, ["amount:"]),
        # The decimals are the currency's: named here, else the payer's (which must exist).
        (
            [
                "schedule",
                "--from",
                "a",
                "--to",
                "b",
                "--amount",
                "1.001",
                "--in",
                "1s",
                "--currency",
                "USD",
            ],
            2,
            ["more than 2 decimals"],
        ),
        (
            [
                "schedule",
                "--from",
                "a",
                "--to",
                "b",
                "--amount",
                "1.000",
                "--in",
                "1s",
                "--currency",
                "USD",
            ],
            2,
            ["amount:", "more than 2 decimals"],
        ),
        (
            ["schedule", "--from", "a", "--to", "b", "--amount", "1.001", "--in", "1s"],
            2,
            ["from:", "no account named 'a'"],
        ),
        (["schedule", "--from", "a", "--to", "b", "--amount", "1"], 2, ["exactly one of"]),
        (
            ["schedule", "--from", "a", "--to", "b", "--amount", "1", "--at", "2030-01-01T10:00"],
            2,
            ["at:", "offset"],
        ),
        (["schedule", "--from", "a", "--to", "b", "--amount", "1", "--in", "soon"], 2, ["in:"]),
        (
            ["schedule", "--from", "a", "--to", "b", "--amount", "1", "--cron", "x", "--tz", "UTC"],
            2,
            ["cron:"],
        ),
        (
            [
                "schedule",
                "--from",
                "a",
                "--to",
                "b",
                "--amount",
                "1",
                "--cron",
                "0 9 * * *",
                "--tz",
                "localtime",
            ],
            2,
            ["tz:", "unknown time zone"],
        ),
        (
            ["schedule", "--from", "nobody", "--to", "b", "--amount", "1", "--in", "1s"],
            2,
            ["from:", "no account"],
        ),
        (["accounts", "create", "x", "--currency", "dollars"], 2, ["currency:"]),
        (["accounts", "create", "a/b"], 2, ["name:", "contain /"]),
        (["accounts", "create", "\uff20external:USD"], 2, ["name:", "'@'"]),
        (["accounts", "show", "ghost"], 3, ["ghost"]),
        (["show", "abc"], 2, ["id:"]),
        (["show", "999"], 3, ["999"]),
        (["list", "--state", "weird"], 2, ["state:"]),
        (
            [
                "schedule",
                "--from",
                "a",
                "--to",
                "b",
                "--amount",
                "1",
                "--in",
                "1h",
                "--remind",
                "0s",
            ],
            2,
            ["remind:", "at least 1s"],
        ),
        (
            [
                "schedule",
                "--from",
                "a",
                "--to",
                "b",
                "--amount",
                "1",
                "--in",
                "1h",
                "--remind",
                "31d",
            ],
            2,
            ["remind:", "at most 30d"],
        ),
        (
            [
                "schedule",
                "--from",
                "a",
                "--to",
                "b",
                "--amount",
                "1",
                "--in",
                "1h",
                "--remind",
                "soon",
            ],
            2,
            ["remind:"],
        ),
        (["accounts", "create", "x", "--remind", "-1h"], 2, ["remind:"]),
        (["accounts", "set", "x", "--remind", "0s"], 2, ["remind:"]),
        (["accounts", "set", "ghost", "--remind", "24h"], 3, ["ghost"]),
    ],
)
def test_bad_input_gets_one_clear_line(
    env: dict[str, str], args: list[str], code: int, needles: list[str]
) -> None:
    one_line_error(paysched(env, *args, check=False), code, *needles)


def test_bad_configuration_names_the_variable(env: dict[str, str]) -> None:
    bad = env | {"PAYSCHED_CONCURRENCY": "lots"}
    one_line_error(paysched(bad, "stats", check=False), 2, "PAYSCHED_CONCURRENCY", "integer")


def test_check_reports_each_backend(env: dict[str, str], tmp_path: Path) -> None:
    good = as_json(env, "check")
    assert good["ok"] and good["redis"]["ok"] and good["database"]["ok"]
    down = env | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = paysched(down, "check", check=False)
    assert result.returncode == 5
    assert "redis: FAILED" in result.stdout and "database: ok" in result.stdout


def test_database_down_is_one_line(env: dict[str, str]) -> None:
    down = env | {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    one_line_error(paysched(down, "list", check=False), 5, "database unavailable")


def test_demo_through_the_standin_provider(env: dict[str, str], tmp_path: Path) -> None:
    """`paysched demo --executor http`: payments through the stand-in provider, its faults
    included; every payment ends final and the provider's ledger agrees with paysched's."""
    demo_env = env | {"PAYSCHED_DATA_DIR": str(tmp_path / "demo")}
    result = paysched(
        demo_env, "demo", "--executor", "http", "--count", "16", "--seconds", "4", "--json"
    )
    summary = json.loads(result.stdout)
    assert summary["executor"] == "http" and summary["unfinished"] == 0
    assert summary["succeeded"] + summary["failed"] == 16
    assert summary["provider"]["matches"] and summary["provider"]["problems"] == []
    assert summary["provider"]["charges"].get("succeeded") == summary["succeeded"]
    assert "Traceback" not in result.stderr


def test_unreachable_redis_fails_a_command_fast(env: dict[str, str]) -> None:
    """Within seconds (the subprocess timeout would fire long before bullmq's 5 minutes of
    reconnects), one line naming Redis and the reason, exit 5."""
    down = env | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    # (The schedule names its currency: else the payer's is looked up first, and there is none.)
    for args in (
        ["stats"],
        ["cancel", "1"],
        [
            "schedule",
            "--from",
            "a",
            "--to",
            "b",
            "--amount",
            "1",
            "--in",
            "1s",
            "--currency",
            "USD",
        ],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "paysched", *args],
            env=os.environ | down,
            capture_output=True,
            text=True,
            timeout=20,
        )
        one_line_error(result, 5, "Redis at redis://127.0.0.1:", "unreachable")


def test_wrong_redis_password_is_named_not_echoed(env: dict[str, str], tmp_path: Path) -> None:
    from tests.conftest import PrivateRedis

    server = PrivateRedis(tmp_path / "redis", password="right-horse-battery")
    server.start()
    try:
        wrong = env | {"REDIS_URL": f"redis://:wrong-staple-9@127.0.0.1:{server.port}/0"}
        result = subprocess.run(
            [sys.executable, "-m", "paysched", "stats"],
            env=os.environ | wrong,
            capture_output=True,
            text=True,
            timeout=20,
        )
        one_line_error(result, 5, "refused the credentials", "REDIS_PASSWORD")
        assert "wrong-staple-9" not in result.stderr
        checked = subprocess.run(
            [sys.executable, "-m", "paysched", "check"],
            env=os.environ | wrong,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert checked.returncode == 5
        assert "redis: FAILED: Redis at redis://:***@127.0.0.1:" in checked.stdout
        assert "refused the credentials" in checked.stdout
    finally:
        server.stop()


def test_a_worker_waits_for_redis_and_says_so_once(env: dict[str, str], tmp_path: Path) -> None:
    from tests.conftest import PrivateRedis, wait_for_sync

    server = PrivateRedis(tmp_path / "redis")  # its port chosen, not started yet
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "paysched", "worker"],
            env=os.environ | env | {"REDIS_URL": server.url},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_sync(lambda: "retrying every" in log_path.read_text(), 20, "the waiting line")
        server.start()
        wait_for_sync(lambda: "worker started" in log_path.read_text(), 30, "the worker")
        text = log_path.read_text()
        assert text.count("Redis unavailable") == 1, text  # once, not per attempt
        assert "Redis answers again after" in text
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        server.stop()


def test_json_logs_carry_the_payment_fields(env: dict[str, str]) -> None:
    json_env = env | {"PAYSCHED_LOG_FORMAT": "json"}
    paysched(json_env, "accounts", "create", "alice")
    paysched(json_env, "accounts", "create", "bob")
    paysched(json_env, "accounts", "deposit", "alice", "10.00")
    pid = as_json(
        json_env, "schedule", "--from", "alice", "--to", "bob", "--amount", "1.00", "--in", "1s"
    )["id"]
    server = subprocess.Popen(
        [sys.executable, "-m", "paysched", "run"],
        env=os.environ | json_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if as_json(json_env, "show", str(pid))["status"] == "succeeded":
                break
            time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line parses
    completed = [
        x for x in lines if x["message"].startswith("job ") and "completed" in x["message"]
    ]
    assert completed, err
    assert completed[0]["payment_id"] == pid and completed[0]["attempt"] == 1
    assert completed[0]["occurrence"].startswith(f"pay-{pid}-")
