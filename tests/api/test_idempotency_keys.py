"""The idempotency repository's promises, at the store: an abandoned reservation is taken over
only after its lease, and a change whose reservation was taken over is rolled back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paysched.db.apikeys import ApiKeys
from paysched.db.idempotency import IdempotencyKeys, InFlight, Mismatch, Replay, Reserved
from paysched.db.store import LostRace, Store

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def keys(store: Store) -> tuple[IdempotencyKeys, int]:
    row, _ = ApiKeys(store.engine).create("test", "write", T0)
    return IdempotencyKeys(store.engine), row.id


def test_reserve_replay_mismatch_in_flight(keys: tuple[IdempotencyKeys, int], store: Store) -> None:
    repo, owner_key = keys
    first = repo.reserve(owner_key, "k", "fp", T0, LEASE)
    assert isinstance(first, Reserved)
    assert isinstance(
        repo.reserve(owner_key, "k", "fp", T0 + timedelta(seconds=1), LEASE), InFlight
    )
    assert isinstance(repo.reserve(owner_key, "k", "other", T0, LEASE), Mismatch)
    complete = repo.completion(owner_key, "k", first.owner, 201, lambda account: account.name)
    store.accounts.create_account("alice", "USD", T0, complete)
    replay = repo.reserve(owner_key, "k", "fp", T0 + timedelta(days=29), LEASE)
    assert replay == Replay(201, "alice")


def test_an_abandoned_reservation_is_taken_over_after_its_lease_and_the_slow_one_rolls_back(
    keys: tuple[IdempotencyKeys, int], store: Store
) -> None:
    repo, owner_key = keys
    slow = repo.reserve(owner_key, "k", "fp", T0, LEASE)
    assert isinstance(slow, Reserved)
    later = repo.reserve(owner_key, "k", "fp", T0 + LEASE + timedelta(seconds=1), LEASE)
    assert isinstance(later, Reserved) and later.owner != slow.owner
    # The first request was slow, not dead: its change must not commit beside the second's.
    with pytest.raises(LostRace):
        store.accounts.create_account(
            "alice", "USD", T0, repo.completion(owner_key, "k", slow.owner, 201, str)
        )
    assert store.accounts.list_accounts() == []
    store.accounts.create_account(
        "alice", "USD", T0, repo.completion(owner_key, "k", later.owner, 201, lambda a: a.name)
    )
    assert [a.name for a in store.accounts.list_accounts()] == ["alice"]


def test_release_frees_the_key_and_purge_forgets_old_ones(
    keys: tuple[IdempotencyKeys, int], store: Store
) -> None:
    repo, owner_key = keys
    held = repo.reserve(owner_key, "k", "fp", T0, LEASE)
    assert isinstance(held, Reserved)
    repo.release(owner_key, "k", held.owner)
    again = repo.reserve(owner_key, "k", "another body", T0, LEASE)
    assert isinstance(again, Reserved)
    store.accounts.create_account(
        "bob", "USD", T0, repo.completion(owner_key, "k", again.owner, 201, str)
    )
    assert repo.purge(T0) == 0  # kept: not older than the cutoff
    assert repo.purge(T0 + timedelta(days=30, seconds=1)) == 1
    assert isinstance(repo.reserve(owner_key, "k", "fp", T0, LEASE), Reserved)
