"""GroupCommit: concurrent calls share one batch; each caller gets its own result or error."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from paysched.threads import GroupCommit


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


class Recorder:
    """A batch function that records its batches and can be held inside a batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.release.wait(timeout=10)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_a_lone_call_runs_at_once(pool: ThreadPoolExecutor) -> None:
    run = Recorder()
    group: GroupCommit[int, int] = GroupCommit(pool, run)
    assert await group.submit(4) == 40
    assert run.batches == [[4]]


async def test_calls_arriving_during_a_batch_share_the_next_one(pool: ThreadPoolExecutor) -> None:
    run = Recorder()
    run.release.clear()
    group: GroupCommit[int, int] = GroupCommit(pool, run, max_batch=3)
    first = asyncio.create_task(group.submit(0))
    await asyncio.to_thread(run.entered.wait, 10)
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)  # let every submit() enqueue
    run.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    # Batch one held only the first call; the five that waited split by max_batch, in order.
    assert run.batches == [[0], [1, 2, 3], [4, 5]]
    assert results[0] == 0 and results[2] == 20 and results[4] == 40
    assert [str(r) for r in results[1::2]] == ["odd 1", "odd 3", "odd 5"]


async def test_a_failing_batch_fails_each_of_its_callers(pool: ThreadPoolExecutor) -> None:
    def broken(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("database down")

    group: GroupCommit[int, int] = GroupCommit(pool, broken)
    results = await asyncio.gather(*(group.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    # And the group keeps working after the failure.
    group._run_batch = Recorder()
    assert await group.submit(2) == 20


async def test_one_items_error_never_fails_the_others(pool: ThreadPoolExecutor) -> None:
    """A batch transaction that fails because of one item (a lock timeout on its row) is
    retried item by item: the others succeed, only that item's caller gets the error."""
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        seen.append(list(items))
        if 7 in items:
            raise TimeoutError("lock timeout on the row of item 7")
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(pool, run)
    results = await asyncio.gather(*(group.submit(i) for i in (5, 7, 9)), return_exceptions=True)
    assert results[0] == 50 and results[2] == 90
    assert isinstance(results[1], TimeoutError)
    assert seen == [[5, 7, 9], [5], [7], [9]]  # the batch, then one by one


async def test_under_load_a_batch_lingers_for_the_calls_behind_it(pool: ThreadPoolExecutor) -> None:
    """Under load (the last batch began less than quiet_s ago) a batch waits linger_s for more
    calls instead of starting with the first; after a quiet spell a lone call runs at once."""
    run = Recorder()
    run.release.clear()
    group: GroupCommit[int, int] = GroupCommit(pool, run, linger_s=0.5, quiet_s=0.05)
    first = asyncio.create_task(group.submit(0))
    await asyncio.to_thread(run.entered.wait, 10)
    loaded = [asyncio.create_task(group.submit(i)) for i in (2, 4)]
    await asyncio.sleep(0)
    run.release.set()
    await asyncio.gather(first, *loaded)
    assert run.batches == [[0], [2, 4]]
    # Loaded (the last batch began just now): 6 starts a batch that waits, and 8 joins it.
    later = asyncio.create_task(group.submit(6))
    await asyncio.sleep(0.01)
    assert list(await asyncio.gather(later, group.submit(8))) == [60, 80]
    assert run.batches[-1] == [6, 8]
    # Quiet for longer than quiet_s: a lone call runs at once (well within the 0.5 s linger).
    await asyncio.sleep(0.1)
    assert await asyncio.wait_for(group.submit(10), 0.4) == 100
    assert run.batches[-1] == [10]
