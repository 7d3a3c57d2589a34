"""The dashboard's live overview is rendered once per interval for every open stream, not
once per stream (issue 20, item 3b)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

import paysched.api  # noqa: F401  (first: paysched.web and paysched.api import each other)
from paysched.events import Event, EventBus, EventKind
from paysched.web import live


class Renders:
    """Stands in for the overview's rendering: counts the renderings; each waits for `gate`."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, _: Any) -> str:
        self.count += 1
        await self.gate.wait()
        return f"rendering {self.count}"


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> Renders:
    fake = Renders()
    monkeypatch.setattr(live, "_render", fake)
    return fake


async def test_concurrent_listeners_await_one_rendering(renders: Renders) -> None:
    bus, stopping = EventBus(), asyncio.Event()
    overview = live.LiveOverview(SimpleNamespace(bus=bus), stopping)  # type: ignore[arg-type]
    renders.gate.clear()  # the first rendering is slow: every listener arrives meanwhile
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(10):
            stack.enter_context(overview.listening())
        waiting = [asyncio.create_task(overview.next(0)) for _ in range(10)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        renders.gate.set()
        async with asyncio.timeout(5):
            firsts = await asyncio.gather(*waiting)
        assert firsts == [(1, "rendering 1")] * 10 and renders.count == 1
        assert len(bus._subscribers) == 1  # one subscription for all of them
        # The next interval (an event ends the wait early): one more rendering for all ten.
        bus.emit(Event(EventKind.COMPLETED, datetime.now(UTC), "k"))
        async with asyncio.timeout(5):
            seconds = await asyncio.gather(*(overview.next(1) for _ in range(10)))
        assert seconds == [(2, "rendering 2")] * 10 and renders.count == 2
        # A stream that opens now starts with the latest rendering, without one of its own.
        with overview.listening():
            assert await overview.next(0) == (2, "rendering 2") and renders.count == 2
    # Nobody listens: the renderer stops and lets go of the bus.
    async with asyncio.timeout(5):
        while bus._subscribers:
            await asyncio.sleep(0.01)
    count = renders.count
    await asyncio.sleep(live.EVERY_S * 1.5)  # nothing to wait for: that nothing happens
    assert renders.count == count


async def test_listeners_end_when_the_server_stops(renders: Renders) -> None:
    bus, stopping = EventBus(), asyncio.Event()
    overview = live.LiveOverview(SimpleNamespace(bus=bus), stopping)  # type: ignore[arg-type]
    with overview.listening():
        assert await overview.next(0) == (1, "rendering 1")
        waiting = asyncio.create_task(overview.next(1))
        stopping.set()
        async with asyncio.timeout(2):
            assert await waiting is None
