"""An idle process leaves the database alone: the scheduler's tick, the notification deliverer
and the resolver look with a read first and open a write transaction only for work that is due
(on SQLite a write transaction takes the database's write lock). Work that appears is still
picked up."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from paysched.app import App
from paysched.config import Settings
from paysched.db.engine import READ_ONLY
from paysched.domain import OccurrenceState
from paysched.standin.server import StandinProvider
from tests.conftest import wait_for
from tests.integration.helpers import all_final, fund, pay, running

S = OccurrenceState


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[StandinProvider]:
    with StandinProvider(
        tmp_path / "provider.db", token="s3cret-token", hang_s=1.5, slow_s=0.1, settle_s=0.5
    ) as instance:
        yield instance


class Counted:
    """Calls of one of the app's own methods, passed through unchanged."""

    def __init__(self, owner: object, name: str) -> None:
        self.calls = 0
        real: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(real)
        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        setattr(owner, name, counting)


async def test_an_idle_app_opens_no_write_transaction_and_still_picks_up_work(
    settings: Settings, provider: StandinProvider
) -> None:
    app = await App.open(
        settings.with_overrides(
            executor="http",
            provider_url=provider.url,
            provider_token="s3cret-token",
            provider_timeout=timedelta(seconds=0.5),
            provider_connect_timeout=timedelta(seconds=1),
            notify_poll=timedelta(seconds=1),
        )
    )
    try:
        assert app.outbox is not None and app.resolver is not None
        await fund(app, {"alice": 0, "bob": 0})
        writes: list[str] = []

        # Every transaction not marked read-only may write (on SQLite: BEGIN IMMEDIATE).
        @event.listens_for(app.store.engine, "begin")
        def _on_begin(conn: Any) -> None:
            if not conn.get_execution_options().get(READ_ONLY, False):
                writes.append("begin")

        # The passes of the three loops that ask the database every second (tests tick every
        # second): counted, so the window holds several of each whatever the machine's speed.
        ticks = Counted(app.store.payments, "materialize_due")
        deliveries = Counted(app.outbox, "lease_due")
        checks = Counted(app.store.execution, "lease_unknowns")
        loops = (ticks, deliveries, checks)

        async with running(app):
            await wait_for(lambda: _all_at_least(loops, 1), 30, "a first pass of each loop")
            writes.clear()
            start = [c.calls for c in loops]
            await wait_for(
                lambda: _all_at_least(loops, *(n + 3 for n in start)),
                30,
                "three more passes of the tick, the deliverer and the resolver",
            )
            assert writes == []

            # Work that appears is picked up: a payment whose answer times out (the fault is set
            # before it is due) is unknown, the resolver asks the provider, and its
            # notification is delivered.
            pid = await pay(app, "alice", "bob", 100, in_s=1.5)
            (occ,) = await app.db(app.store.reads.occurrences_of, pid)
            provider.set_faults({"keys": {occ.key: "timeout_after"}})
            (done,) = await all_final(app, [pid], 60)
            assert done.state == S.SUCCEEDED
            history = await app.db(app.store.reads.transitions_of, [done.id])
            assert S.UNKNOWN in {h.to_state for h in history}  # resolved by the resolver

            async def notified() -> bool:
                assert app.outbox is not None
                found = await app.db(app.outbox.list, None, pid)
                return bool(found) and all(n.state == "sent" for n in found)

            await wait_for(notified, 30, "the payment's notification to be sent")
    finally:
        await app.close()


async def _all_at_least(loops: tuple[Counted, ...], *least: int) -> bool:
    wanted = least if len(least) == len(loops) else least * len(loops)
    return all(c.calls >= n for c, n in zip(loops, wanted, strict=True))
