"""Who acted: the person behind a change, as the `actions` table records it.

A person acts through an API key (over the HTTP API or the dashboard), the command line, the
Python API, or a button in a linked chat. The scheduler, workers and resolver act for nobody:
they write no action.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Literal, Protocol

ActorKind = Literal["api_key", "cli", "python", "chat"]
Via = Literal["api", "dashboard", "cli", "python", "chat"]
NAME_MAX = 100  # actions.actor_name


class KeyRow(Protocol):
    """What an actor needs of an API key's row (db.apikeys.ApiKey): never its secret."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    name: str
    via: Via
    api_key_id: int | None = None

    @classmethod
    def of_key(cls, key: KeyRow, via: Via) -> Actor:
        """The key that signed the request. Its name is copied: a key renamed or revoked
        later still reads as the one that acted."""
        return cls("api_key", key.name[:NAME_MAX], via, key.id)

    @classmethod
    def cli(cls) -> Actor:
        return cls("cli", _with_user("cli"), "cli")

    @classmethod
    def python(cls) -> Actor:
        return cls("python", _with_user("python"), "python")

    @classmethod
    def chat(cls, channel: str, chat_id: str) -> Actor:
        """A linked chat that pressed a button: `telegram:12345`."""
        return cls("chat", f"{channel}:{chat_id}"[:NAME_MAX], "chat")

    def describe(self) -> str:
        """For a log line or a person: `key #3 ops-alice`, `cli (alice)`."""
        if self.kind == "api_key":
            return f"key #{self.api_key_id} {self.name}"
        return self.name


def _with_user(kind: str) -> str:
    """`cli (alice)`: the OS user is who typed it, as far as this machine knows."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name, no $USER (a container): the kind alone says enough
        return kind
    return f"{kind} ({user})"[:NAME_MAX]
