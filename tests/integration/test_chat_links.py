"""The link tokens and links in the database (db.links): single use under concurrency,
expiry, and the bot's update offset, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from paysched.db import tables as t
from paysched.db.links import ChatLinks, LinkRefused, token_hash
from paysched.db.store import Store
from paysched.errors import InvalidInput, NotFound

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)


@pytest.fixture
def links(store: Store) -> ChatLinks:
    store.accounts.create_account("alice", "EUR", NOW)
    store.accounts.create_account("bob", "EUR", NOW)
    return ChatLinks(store.engine)


def refusal(links: ChatLinks, token: str, chat: str, at: datetime = NOW) -> str:
    with pytest.raises(LinkRefused) as refused:
        links.redeem(token, chat, at)
    return refused.value.reason


def test_a_token_links_one_chat_once(links: ChatLinks) -> None:
    issued = links.issue("alice", NOW, TTL)
    with links.engine.connect() as conn:
        stored = conn.execute(select(t.link_tokens.c.token_hash)).scalar_one()
    assert stored == token_hash(issued.token) != issued.token  # only its hash is kept
    assert links.redeem(issued.token, "1", NOW + TTL - timedelta(seconds=1)).account.name == "alice"
    assert links.redeem(issued.token, "1", NOW).account.name == "alice"  # the same chat again
    assert refusal(links, issued.token, "2") == "used"
    assert refusal(links, "x" * 43, "2") == "unknown"
    assert refusal(links, "x" * 200, "2") == "unknown"
    assert refusal(links, "", "2") == "unknown"
    late = links.issue("bob", NOW, TTL)
    assert refusal(links, late.token, "2", NOW + TTL) == "expired"
    assert [a.name for a in links.accounts_of_chat("1")] == ["alice"]
    assert links.accounts_of_chat("2") == []
    # A second account for the same chat; a second token of an account already linked.
    links.redeem(links.issue("bob", NOW, TTL).token, "1", NOW)
    links.redeem(links.issue("bob", NOW, TTL).token, "1", NOW)
    assert [a.name for a in links.accounts_of_chat("1")] == ["alice", "bob"]
    assert [link.chat_id for link in links.links_of("bob")] == ["1"]


def test_racing_chats_link_one(links: ChatLinks) -> None:
    issued = links.issue("alice", NOW, TTL)

    def attempt(chat: int) -> str:
        try:
            links.redeem(issued.token, str(chat), NOW)
        except LinkRefused as refused:
            return refused.reason
        return "linked"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert sorted(outcomes) == ["linked"] + ["used"] * 7
    assert len(links.links_of("alice")) == 1


def test_unlink(links: ChatLinks) -> None:
    links.redeem(links.issue("alice", NOW, TTL).token, "7", NOW)
    [link] = links.links_of("alice")
    with pytest.raises(NotFound):
        links.unlink("bob", link.id, None)  # another account's link
    with pytest.raises(NotFound):
        links.unlink("alice", None, "8")
    assert links.unlink("alice", None, "7") == link
    assert links.accounts_of_chat("7") == []
    with pytest.raises(NotFound):
        links.unlink("alice", link.id, None)
    with pytest.raises(NotFound):
        links.issue("nobody", NOW, TTL)
    with pytest.raises(NotFound):
        links.links_of("@external:EUR")


def test_the_update_offset_only_moves_forward(links: ChatLinks) -> None:
    assert links.update_offset() == 0
    links.handled(41)
    assert links.update_offset() == 42
    links.handled(10)  # a late retry of an old update
    assert links.update_offset() == 42
    links.handled(42)
    assert links.update_offset() == 43


def test_an_approver_link_makes_the_chat_the_accounts_approver(links: ChatLinks) -> None:
    def roles() -> dict[str, str]:
        return {link.chat_id: link.role for link in links.links_of("alice")}

    holder = links.redeem(links.issue("alice", NOW, TTL).token, "1", NOW)
    assert (holder.account.name, holder.role) == ("alice", "holder")
    approver = links.redeem(links.issue("alice", NOW, TTL, role="approver").token, "2", NOW)
    assert approver.role == "approver"
    assert roles() == {"1": "holder", "2": "approver"}
    # A holder's chat opening an approver's link becomes the approver; an approver's chat
    # opening a holder's link stays the approver (a link demotes nobody).
    assert links.redeem(links.issue("alice", NOW, TTL, role="approver").token, "1", NOW).role == (
        "approver"
    )
    assert links.redeem(links.issue("alice", NOW, TTL).token, "2", NOW).role == "approver"
    assert roles() == {"1": "approver", "2": "approver"}
    with pytest.raises(InvalidInput) as bad:
        links.issue("alice", NOW, TTL, role="owner")
    assert bad.value.field == "role"
