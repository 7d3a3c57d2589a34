"""Running the synchronous store from async code, on a bounded pool of database threads."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


async def in_pool(
    pool: ThreadPoolExecutor, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Await `fn(*args, **kwargs)` run on `pool` (sized to the worker concurrency, unlike the
    loop's default executor)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))


class GroupCommit(Generic[T, R]):
    """Group commit: calls that arrive while a batch is in the database run together in the next.

    `run_batch(items)` executes a whole batch in ONE transaction on the pool and returns one
    result per item, in order — a value, or an exception for that item alone (e.g. insufficient
    funds). When `run_batch` itself raises, the items are retried one by one (see `_run`).
    A lone call runs at once, so at low concurrency nothing waits; under load one
    BEGIN/COMMIT and one execution of each statement serve many payments. This is where the
    worker's database time went: per-statement and per-transaction overhead, not the rows.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        run_batch: Callable[[list[T]], Sequence[R | BaseException]],
        max_batch: int = 100,
        linger_s: float = 0.0,
        quiet_s: float | None = None,
    ) -> None:
        self._pool = pool
        self._run_batch = run_batch
        self._max_batch = max_batch
        # Under load a batch waits linger_s for more calls before it starts; a lone call after
        # a quiet spell still runs at once. Load: the last batch began less than quiet_s (one
        # linger) before. Calls that came one at a time, back to back, each ran alone before
        # the next arrived: a worker fetching jobs one by one never batched its claims. With
        # 4 lingers, payments due every 40 ms or so (bench lateness) waited too, often.
        self._linger_s = linger_s
        self._quiet_s = linger_s if quiet_s is None else quiet_s
        self._last_start = -math.inf
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            recent = time.monotonic() - self._last_start < self._quiet_s
            if recent and len(self._pending) < self._max_batch:
                try:
                    await asyncio.sleep(self._linger_s)
                except asyncio.CancelledError:
                    for _, future in self._pending:
                        future.cancel()
                    self._pending.clear()
                    raise
            self._last_start = time.monotonic()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._run([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller was cancelled meanwhile
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _run(self, items: list[T]) -> Sequence[R | BaseException]:
        """One transaction for the batch; if it fails as a whole (a lock timeout on one
        item's row, a deadlock, the database gone), each item runs again alone, so that one
        item's error never fails another and each caller gets its own outcome."""
        try:
            return await in_pool(self._pool, self._run_batch, items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        results: list[R | BaseException] = []
        for item in items:
            try:
                results.extend(await in_pool(self._pool, self._run_batch, [item]))
            except Exception as exc:
                results.append(exc)
        return results
