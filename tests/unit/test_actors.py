"""Actors: who a recorded action names, and how a person reads it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from paysched.actors import Actor


@dataclass
class Key:
    id: int
    name: str


def test_a_key_is_named_by_id_and_name_never_more() -> None:
    actor = Actor.of_key(Key(3, "ops-alice"), "dashboard")
    assert (actor.kind, actor.api_key_id, actor.name, actor.via) == (
        "api_key",
        3,
        "ops-alice",
        "dashboard",
    )
    assert actor.describe() == "key #3 ops-alice"
    assert len(Actor.of_key(Key(4, "k" * 300), "api").name) == 100  # the column's size


def test_the_command_line_names_its_user(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "alice")
    assert Actor.cli() == Actor("cli", "cli (alice)", "cli")
    assert Actor.python().describe() == "python (alice)"


def test_no_known_user_is_the_kind_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown() -> str:
        raise OSError("no such user")

    monkeypatch.setattr("paysched.actors.getpass.getuser", unknown)
    assert Actor.cli().name == "cli"
