"""Helpers for tests that run the scheduler and workers in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from paysched.actors import Actor
from paysched.app import App
from paysched.domain import FINAL_STATES, Occurrence
from tests.conftest import wait_for


async def fund(app: App, balances: dict[str, int], currency: str = "USD") -> None:
    now = app.clock.now()
    for name, amount in balances.items():
        await app.db(app.store.accounts.create_account, name, currency, now)
        if amount:
            await app.db(app.store.accounts.deposit, name, amount, now)


async def pay(
    app: App, payer: str, payee: str, amount: int, in_s: float = 0.0, memo: str = ""
) -> int:
    payment = await app.create_payment(
        actor=Actor.python(),
        payer=payer,
        payee=payee,
        amount=amount,
        currency="USD",
        due_at=app.clock.now() + timedelta(seconds=in_s),
        cron=None,
        timezone=None,
        memo=memo,
    )
    return payment.id


@contextlib.asynccontextmanager
async def running(app: App, *, scheduler: bool = True, worker: bool = True) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop, scheduler=scheduler, worker=worker))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def all_final(app: App, payment_ids: Sequence[int], timeout: float = 30) -> list[Occurrence]:
    async def done() -> bool:
        occs = await app.db(app.store.reads.all_occurrences, list(payment_ids))
        return len(occs) >= len(payment_ids) and all(o.state in FINAL_STATES for o in occs)

    await wait_for(done, timeout, f"payments {list(payment_ids)} to reach a final state")
    return await app.db(app.store.reads.all_occurrences, list(payment_ids))
