"""The boundary holds: each finding of the hostile-input review, as a regression test.

Limits are checked before anything is written; refused input exits 2 (3 for an id that names
nothing) with one line naming the field, never a traceback or "backend unavailable"; nothing
is half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paysched.config import Settings
from paysched.db.store import Claim, Store
from paysched.domain import MAX_AMOUNT, MAX_BALANCE, MAX_ISSUED
from paysched.errors import (
    BalanceLimit,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    PermanentDelivery,
)
from paysched.notify.webhook import WebhookNotifier

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paysched", *args],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- limits: no balance can overflow, on either database ---------------------------------------


def test_deposits_stop_at_the_balance_and_issue_limits(store: Store) -> None:
    store.accounts.create_account("big", "USD", T0)
    store.accounts.create_account("other", "USD", T0)
    with pytest.raises(InvalidInput, match="at most"):
        store.accounts.deposit("big", MAX_AMOUNT + 1, T0)
    for _ in range(MAX_BALANCE // MAX_AMOUNT):
        store.accounts.deposit("big", MAX_AMOUNT, T0)
    assert store.accounts.get_account("big").balance == MAX_BALANCE
    with pytest.raises(InvalidInput, match="balance limit") as info:
        store.accounts.deposit("big", 1, T0)
    assert info.value.field == "amount"
    assert store.accounts.get_account("big").balance == MAX_BALANCE  # unchanged, still an integer
    # Everything deposited in USD is bounded too (the external account holds minus it).
    accounts = MAX_ISSUED // MAX_BALANCE
    for i in range(accounts - 1):
        store.accounts.create_account(f"filler-{i}", "USD", T0)
        for _ in range(MAX_BALANCE // MAX_AMOUNT):
            store.accounts.deposit(f"filler-{i}", MAX_AMOUNT, T0)
    with pytest.raises(InvalidInput, match="deposits in USD would exceed"):
        store.accounts.deposit("other", 1, T0)
    report = store.accounts.ledger_report()
    assert report.balanced, report.problems
    store.accounts.create_account("euro", "EUR", T0)
    assert store.accounts.deposit("euro", 100, T0).balance == 100  # another currency, its own limit


def test_a_payee_over_the_limit_fails_at_once_with_a_plain_reason(store: Store) -> None:
    store.accounts.create_account("payer", "USD", T0)
    store.accounts.create_account("rich", "USD", T0)
    store.accounts.deposit("payer", 500, T0)
    for _ in range(MAX_BALANCE // MAX_AMOUNT):
        store.accounts.deposit("rich", MAX_AMOUNT, T0)
    store.payments.create_payment(
        payer="payer",
        payee="rich",
        amount=100,
        currency="USD",
        due_at=T0,
        cron=None,
        timezone=None,
        memo="",
        now=T0,
    )
    (occ,) = store.payments.materialize_due(T0, T0)
    claim = store.execution.claim(occ.id, T0)
    assert isinstance(claim, Claim)
    (result,) = store.execution.settle_many([claim], T0)
    # Permanent (no retries), and the reason is words, not SQL with its parameters.
    assert isinstance(result, BalanceLimit)
    assert "'rich' would hold more than the balance limit" in str(result)
    assert store.accounts.get_account("payer").balance == 500
    assert store.accounts.get_account("rich").balance == MAX_BALANCE


def test_payments_are_bounded_and_between_users(store: Store) -> None:
    store.accounts.create_account("a", "USD", T0)
    store.accounts.create_account("b", "USD", T0)
    store.accounts.deposit("a", 100, T0)
    fields: dict[str, Any] = dict(
        payer="a", payee="b", currency="USD", due_at=T0, cron=None, timezone=None, memo="", now=T0
    )
    with pytest.raises(InvalidInput, match="at most") as info:
        store.payments.create_payment(amount=MAX_AMOUNT + 1, **fields)
    assert info.value.field == "amount"
    with pytest.raises(InvalidInput, match="external account") as info:
        store.payments.create_payment(amount=1, **(fields | {"payer": "@external:USD"}))
    assert info.value.field == "from"
    with pytest.raises(InvalidInput, match="external account"):
        store.accounts.deposit("@external:USD", 5, T0)
    assert store.payments.list_payments() == []


def test_ids_beyond_any_row_are_not_found_without_asking_sql(store: Store) -> None:
    for lookup in (
        store.payments.get_payment,
        store.reads.get_occurrence,
        store.execution.unresolved,
    ):
        with pytest.raises(NotFound):
            lookup(2**31)
    with pytest.raises(NotFound):
        store.control.cancel_payment(2**63, T0, "x")


# -- names ------------------------------------------------------------------------------------


def test_names_are_normalised_trimmed_printable_and_unique(store: Store) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "zoé"), unicodedata.normalize("NFD", "zoé")
    assert nfc != nfd
    assert store.accounts.create_account(nfd, "EUR", T0).name == nfc
    with pytest.raises(Conflict):
        store.accounts.create_account(nfc, "EUR", T0)  # a look-alike duplicate
    assert store.accounts.create_account("  alice  ", "USD", T0).name == "alice"
    assert store.accounts.get_account("alice ").name == "alice"
    for bad in (
        "   ",
        "a\nb",
        "\x1b[31mred",
        "x" * 101,
        "@mine",
        # Look-alikes of the external accounts' '@': full-width, small, after a space.
        "\uff20external:USD",
        "\ufe6bmine",
        "\u3000\uff20x",
        # What would end or escape the name's segment of /v1/accounts/{name}.
        "a/b",
        "a\\b",
        "what?",
        "a#1",
        "100%",
        ".",
        "..",
    ):
        with pytest.raises(InvalidInput) as info:
            store.accounts.create_account(bad, "USD", T0)
        assert info.value.field == "name"
    # Refused as external wherever a name is used, not only when it is created.
    with pytest.raises(InvalidInput, match="external account"):
        store.accounts.deposit("\uff20external:USD", 5, T0)
    assert store.accounts.create_account("a.b+c&d;e=f g", "USD", T0).name == "a.b+c&d;e=f g"


# -- the CLI: one line, the field, the right exit code -----------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_cli_refuses_hostile_input(env: dict[str, str]) -> None:
    assert cli(env, "accounts", "create", "bob").returncode == 0
    assert cli(env, "accounts", "create", "carol").returncode == 0
    schedule = ["schedule", "--from", "bob", "--to", "carol"]
    cases: list[tuple[list[str], int, list[str]]] = [
        (["accounts", "deposit", "bob", "92233720368547758.07"], 2, ["amount:", "at most"]),
        (["accounts", "deposit", "bob", "1e309"], 2, ["amount:"]),
        (["accounts", "deposit", "bob", "10^20"], 2, ["amount:"]),
        (["accounts", "deposit", "bob", "9" * 5000], 2, ["amount:"]),
        (["accounts", "deposit", "bob", "١٢٣"], 2, ["amount:"]),
        (["accounts", "deposit", "bob", "-5"], 2, ["amount:", "greater than zero"]),
        (["accounts", "deposit", "@external:USD", "5"], 2, ["name:", "external"]),
        (["accounts", "create", "x", "--currency", "XYZ"], 2, ["currency:"]),
        (["accounts", "create", "a\x1b[2Jb"], 2, ["name:", "printable"]),
        (["accounts", "create", "   "], 2, ["name:"]),
        (["show", "١"], 2, ["id:"]),
        (["show", "99999999999999999999999"], 2, ["id:"]),
        (["show", "2147483648"], 3, ["no payment with id 2147483648"]),
        ([*schedule, "--amount", "1e309", "--in", "1s"], 2, ["amount:"]),
        ([*schedule, "--amount", "1", "--at", "2020-01-01T00:00:00Z"], 2, ["at:", "--allow-past"]),
        ([*schedule, "--amount", "1", "--at", "9999-12-31T23:59:59-14:00"], 2, ["at:", "range"]),
        ([*schedule, "--amount", "1", "--in", "3000000d"], 2, ["in:"]),
        ([*schedule, "--amount", "1", "--cron", "0 0 30 2 *"], 2, ["cron:", "never"]),
        ([*schedule, "--amount", "1", "--cron", "*" + " *" * 80], 2, ["cron:"]),
        ([*schedule, "--from", "@external:USD", "--amount", "1", "--in", "1h"], 2, ["from:"]),
        (
            [
                *schedule,
                "--amount",
                "1",
                "--in",
                "1h",
                "--notify",
                "webhook:http://127.0.0.1:99999/",
            ],
            2,
            ["notify:", "port"],
        ),
        (
            [*schedule, "--amount", "1", "--in", "1h", "--notify", "webhook:http://a.b/x\r\nX: y"],
            2,
            ["notify:", "control"],
        ),
        (
            [*schedule, "--amount", "1", "--in", "1h", "--notify", "webhook:http://a.b/x y"],
            2,
            ["notify:"],
        ),
        (
            [
                *schedule,
                "--amount",
                "1",
                "--in",
                "1h",
                "--notify",
                "webhook:http://169.254.169.254/latest",
            ],
            2,
            ["notify:", "ALLOW_PRIVATE"],
        ),
        (
            [
                *schedule,
                "--amount",
                "1",
                "--in",
                "1h",
                "--notify",
                "webhook:http://a.b/" + "x" * 100_000,
            ],
            2,
            ["notify:", "longer than"],
        ),
    ]
    for args, code, needles in cases:
        refused(cli(env, *args), code, *needles)
    listed = json.loads(cli(env, "list", "--json").stdout)
    assert listed == []  # nothing half-written
    accounts = json.loads(cli(env, "accounts", "list", "--json").stdout)
    assert {a["name"]: a["balance"] for a in accounts} == {"bob": "0.00", "carol": "0.00"}
    # Explicitly allowed: a past due time runs at once; an internal webhook when configured.
    allowed = env | {"PAYSCHED_WEBHOOK_ALLOW_PRIVATE": "1"}
    result = cli(
        allowed,
        *schedule,
        "--amount",
        "1",
        "--at",
        "2020-01-01T00:00:00Z",
        "--allow-past",
        "--notify",
        "webhook:http://127.0.0.1:8080/hook",
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("REDIS_URL", "redis://127.0.0.1:abc/0", "port"),
        ("REDIS_URL", "redis://127.0.0.1:6379/abc", "database number"),
        ("PAYSCHED_LOOKAHEAD", "99999999999d", "at most"),
        ("DATABASE_URL", "sqlite://relative.db", "three slashes"),
        ("PAYSCHED_NOTIFY_POLL", "0s", "at least"),
        ("PAYSCHED_CONCURRENCY", "١٢", "integer"),
        ("PAYSCHED_WEBHOOK_ALLOW_PRIVATE", "maybe", "expected"),
        ("PAYSCHED_NOTIFY", "webhook:http://10.0.0.1/x", "PAYSCHED_WEBHOOK_ALLOW_PRIVATE"),
        # A default target whose channel is not set up: every notification would be dead.
        ("PAYSCHED_NOTIFY", "log,telegram:123", "TELEGRAM_BOT_TOKEN"),
        ("PAYSCHED_NOTIFY", "webhook:https://example.com/hook", "PAYSCHED_WEBHOOK_SECRET"),
    ],
)
def test_bad_configuration_names_the_variable(
    name: str, value: str, needle: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PAYSCHED_DATA_DIR": str(tmp_path), name: value})
    assert info.value.variable == name and needle in str(info.value)


def test_a_data_dir_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    result = cli({"PAYSCHED_DATA_DIR": str(file)}, "stats")
    refused(result, 2, "PAYSCHED_DATA_DIR", "not a directory")


async def test_a_malformed_webhook_url_is_dead_at_once() -> None:
    notifier = WebhookNotifier("whsec-test-secret")
    try:
        for url in ("http://127.0.0.1:99999/", "http://a.b/x\r\ny", "ftp://a.b/"):
            with pytest.raises(PermanentDelivery, match="invalid webhook URL"):
                await notifier.send(url, {"event": "succeeded"}, "k")
    finally:
        await notifier.close()
