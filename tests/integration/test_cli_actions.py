"""Who acted, from the command line: each command that changes something records `cli (user)`
with the change, and `paysched show` lists what people did (issue 22)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from paysched.db import tables as t
from paysched.db.store import Store
from paysched.db.store.execution import Claim
from paysched.domain import OccurrenceState
from tests.integration.test_cli import as_json, one_line_error, paysched

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def recorded(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(t.actions).order_by(t.actions.c.id)))


def test_each_cli_action_records_the_user(env: dict[str, str], store: Store) -> None:
    env = env | {"LOGNAME": "alice", "USER": "alice"}
    paysched(env, "accounts", "create", "alice")
    paysched(env, "accounts", "create", "bob")
    paysched(env, "accounts", "deposit", "alice", "10.00")
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
            "--cron",
            "0 9 * * 1",
            "--tz",
            "Europe/Berlin",
        )["id"]
    )
    for command in ("pause", "resume", "skip-next", "cancel"):
        paysched(env, command, pid)
    # Refused: nothing recorded.
    one_line_error(paysched(env, "cancel", pid, check=False), 4, "already cancelled")
    made = as_json(env, "apikeys", "create", "ops-bob", "--scope", "write")
    paysched(env, "apikeys", "revoke", str(made["id"]))

    done = recorded(store)
    assert [(r.action, r.payment_id) for r in done] == [
        ("create_account", None),
        ("create_account", None),
        ("deposit", None),
        ("create", int(pid)),
        ("pause", int(pid)),
        ("resume", int(pid)),
        ("skip_next", int(pid)),
        ("cancel", int(pid)),
        ("create_api_key", None),
        ("revoke_api_key", None),
    ]
    assert {(r.actor_kind, r.actor_name, r.via, r.api_key_id) for r in done} == {
        ("cli", "cli (alice)", "cli", None)
    }
    assert done[2].detail == '{"account": "alice", "amount_minor": 1000, "currency": "USD"}'
    assert done[-1].detail == f'{{"api_key": {made["id"]}}}'

    shown = as_json(env, "show", pid)["actions"]
    assert [a["action"] for a in shown] == ["cancel", "skip_next", "resume", "pause", "create"]
    assert shown[0]["actor"] == {"kind": "cli", "api_key_id": None, "name": "cli (alice)"}
    text = paysched(env, "show", pid).stdout
    assert "cancelled by cli (alice) via cli" in text
    assert text.index("cancelled by") < text.index("created by")


def test_a_cli_resolve_records_its_reason(env: dict[str, str], store: Store) -> None:
    paysched(env, "accounts", "create", "alice")
    paysched(env, "accounts", "create", "bob")
    pid = int(
        as_json(env, "schedule", "--from", "alice", "--to", "bob", "--amount", "1", "--in", "30s")[
            "id"
        ]
    )
    [occ] = store.reads.occurrences_of(pid)
    now = occ.due_at
    claim = store.execution.claim(occ.id, now)
    assert isinstance(claim, Claim)
    store.execution.finish(claim, OccurrenceState.NEEDS_REVIEW, now, "the provider never answered")
    paysched(env, "resolve", str(occ.id), "--retry", "--reason", "sent again by hand")
    [resolved] = [r for r in recorded(store) if r.action == "resolve"]
    assert (resolved.payment_id, resolved.occurrence_id) == (pid, occ.id)
    assert resolved.detail == '{"outcome": "retry", "reason": "sent again by hand"}'
    assert resolved.actor_kind == "cli" and resolved.actor_name.startswith("cli")
    text = paysched(env, "show", str(pid)).stdout
    assert "resolved as retry by cli" in text and "(sent again by hand)" in text
