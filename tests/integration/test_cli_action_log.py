"""`paysched actions`: the whole audit log from the command line, filtered as GET /v1/actions
is; a bad filter is a one-line error naming its option (exit 2). SQLite and PostgreSQL."""

from __future__ import annotations

from paysched.db.store import Store
from tests.integration.test_cli import as_json, one_line_error, paysched


def test_actions_lists_filters_and_refuses_bad_filters(env: dict[str, str], store: Store) -> None:
    env = env | {"LOGNAME": "alice", "USER": "alice"}
    for name in ("alice", "bob"):
        paysched(env, "accounts", "create", name)
    paysched(env, "accounts", "deposit", "alice", "10.00")
    made = as_json(env, "schedule", "--from", "alice", "--to", "bob", "--amount", "1", "--in", "1h")
    pid = made["id"]
    paysched(env, "cancel", str(pid))
    key = as_json(env, "apikeys", "create", "ops-bob", "--scope", "write")

    everything = as_json(env, "actions")
    assert [(a["action"], a["payment_id"]) for a in everything] == [
        ("create_api_key", None),
        ("cancel", pid),
        ("create", pid),
        ("deposit", None),
        ("create_account", None),
        ("create_account", None),
    ]
    assert everything[0]["actor"] == {"kind": "cli", "api_key_id": None, "name": "cli (alice)"}
    assert everything[0]["detail"] == {"api_key": key["id"], "scope": "write"}
    assert [a["action"] for a in as_json(env, "actions", "--limit", "2")] == [
        "create_api_key",
        "cancel",
    ]
    assert [a["action"] for a in as_json(env, "actions", "--payment", f"#{pid}")] == [
        "cancel",
        "create",
    ]
    assert [a["action"] for a in as_json(env, "actions", "--action", "deposit")] == ["deposit"]
    assert len(as_json(env, "actions", "--actor", "cli")) == 6
    assert as_json(env, "actions", "--actor", "#1") == []  # no key acted
    assert as_json(env, "actions", "--since", "2999-01-01") == []

    text = paysched(env, "actions").stdout.splitlines()
    assert len(text) == 6
    assert text[0].endswith(f"created an API key #{key['id']} (write) by cli (alice) via cli")
    assert text[1].endswith(f"payment {pid}: cancelled by cli (alice) via cli")
    assert text[3].endswith("deposited 10.00 USD into alice by cli (alice) via cli")
    assert paysched(env, "actions", "--action", "pause").stdout.strip() == "no actions"

    for args, needle in [
        (("--actor", "alice"), "actor: expected an API key id"),
        (("--action", "delete"), "action: expected one of create, cancel"),
        (("--payment", "x"), "payment: expected a positive integer id"),
        (("--since", "yesterday"), "since: expected ISO-8601"),
        (("--since", "2026-12-02", "--before", "2026-12-01"), "before: must be later than since"),
    ]:
        one_line_error(paysched(env, "actions", *args, check=False), 2, needle)
