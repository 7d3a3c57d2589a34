"""Approvals from the command line: `schedule --approval required`, `accounts create|set
--approval-above`, `approve` / `reject`, and four eyes between the people at the keyboard."""

from __future__ import annotations

import pytest

from tests.integration.test_cli import as_json, one_line_error, paysched

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def awaiting(env: dict[str, str], *extra: str) -> tuple[int, str]:
    made = as_json(
        env, "schedule", "--from", "alice", "--to", "bob", "--amount", "5", "--in", "30s", *extra
    )
    [occ] = as_json(env, "show", str(made["id"]))["occurrences"]
    return made["id"], occ["key"]


def test_cli_approve_and_reject_with_four_eyes(env: dict[str, str]) -> None:
    alice = env | {"LOGNAME": "alice", "USER": "alice"}
    bob = env | {"LOGNAME": "bob", "USER": "bob"}
    paysched(alice, "accounts", "create", "alice")
    paysched(alice, "accounts", "create", "bob")
    paysched(alice, "accounts", "deposit", "alice", "100")
    pid, key = awaiting(
        alice, "--approval", "required", "--approval-timeout", "2h", "--on-timeout", "fail"
    )
    shown = as_json(alice, "show", str(pid))
    assert (shown["approval"], shown["approval_timeout"], shown["on_timeout"]) == (
        "required",
        "7200s",
        "fail",
    )
    assert shown["occurrences"][0]["state"] == "awaiting_approval"
    # The creator may not decide on it.
    one_line_error(paysched(alice, "approve", key, check=False), 4, "four eyes")
    one_line_error(paysched(bob, "reject", key, check=False), 2, "reason")
    assert as_json(bob, "approve", key) == {"occurrence": key, "state": "queued"}
    one_line_error(paysched(bob, "approve", key, check=False), 4, "already approved")
    pid2, key2 = awaiting(alice, "--approval", "required")
    assert as_json(bob, "reject", key2, "--reason", "wrong payee")["state"] == "cancelled"
    actions = [a["summary"] for a in as_json(alice, "show", str(pid2))["actions"]]
    assert actions[0] == "rejected an occurrence by cli (bob) via cli"


def test_cli_account_rule_and_bad_input(env: dict[str, str]) -> None:
    made = as_json(env, "accounts", "create", "alice", "--approval-above", "50.00")
    assert made["approval_above"] == "50.00"
    paysched(env, "accounts", "create", "bob")
    paysched(env, "accounts", "deposit", "alice", "100")
    pid, _ = awaiting(env, "--amount", "50.01")
    assert as_json(env, "show", str(pid))["occurrences"][0]["state"] == "awaiting_approval"
    pid, _ = awaiting(env, "--amount", "50.00")
    assert as_json(env, "show", str(pid))["occurrences"][0]["state"] == "queued"
    cleared = as_json(env, "accounts", "set", "alice", "--approval-above", "off")
    assert "approval_above" not in cleared and cleared["name"] == "alice"
    pid, _ = awaiting(env, "--amount", "70")
    assert as_json(env, "show", str(pid))["occurrences"][0]["state"] == "queued"
    for args, field in (
        (("--approval", "maybe"), "approval"),
        (("--approval-timeout", "soon"), "approval_timeout"),
        (("--on-timeout", "skip"), "on_timeout"),
    ):
        result = paysched(
            env,
            "schedule",
            "--from",
            "alice",
            "--to",
            "bob",
            "--amount",
            "1",
            "--in",
            "1h",
            *args,
            check=False,
        )
        one_line_error(result, 2, field)
    one_line_error(
        paysched(env, "accounts", "set", "alice", "--approval-above", "x", check=False),
        2,
        "approval_above",
    )
