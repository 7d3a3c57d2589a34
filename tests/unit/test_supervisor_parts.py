import asyncio
import os

import pytest

from paysched.supervisor import PARENT_ENV, shares, watch_parent


def test_shares_split_the_concurrency() -> None:
    assert shares(3, 2) == [2, 1]
    assert shares(50, 4) == [13, 13, 12, 12]
    assert shares(7, 7) == [1] * 7


async def test_a_child_stops_when_its_supervisor_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel has no parent-death signal, the child notices a new parent itself."""
    monkeypatch.setenv(PARENT_ENV, str(os.getppid()))
    stop = asyncio.Event()
    watching = asyncio.create_task(watch_parent(stop, every_s=0.01))
    await asyncio.sleep(0.05)
    assert not stop.is_set()  # its supervisor is there
    stop.set()
    await asyncio.wait_for(watching, 1)
    monkeypatch.setenv(PARENT_ENV, str(os.getppid() + 1))  # some other process: not its parent
    stop = asyncio.Event()
    await asyncio.wait_for(watch_parent(stop, every_s=0.01), 1)
    assert stop.is_set()
