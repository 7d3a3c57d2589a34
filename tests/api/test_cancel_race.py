"""A cancel racing a worker's settle, over HTTP, on SQLite and PostgreSQL.

The first test forces the interleaving (the settle paused inside its transaction, holding the
occurrence, until the cancel waits for it), so the race is the same on every run; the second
replays the hostile client's rounds against a running worker (on PostgreSQL it deadlocked in
each of several runs before the fix).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
from sqlalchemy import event

from paysched.db.store import Claim
from paysched.domain import OccurrenceState as S
from paysched.notify.messages import NotifyPolicy, outbox_for
from tests.api.conftest import Api, problem
from tests.conftest import wait_for
from tests.integration.helpers import all_final, fund, pay, running
from tests.integration.test_money_path import waiting_on_a_lock


async def test_a_cancel_that_loses_to_a_settle_is_409_already_ran(api: Api) -> None:
    """Finding 9: the settle holds the occurrence and then writes its notification, whose
    foreign key share-locks the payment; the cancel holds the payment and waits for the
    occurrence. PostgreSQL found a deadlock and the cancel answered 503. The cancel must
    wait for the settle and then say what is true: the payment has already run."""
    app, store = api.app, api.app.store
    await fund(app, {"alice": 10_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 1_000, in_s=30)
    [occ] = await app.db(store.reads.occurrences_of, pid)
    now = app.clock.now()
    claim = await app.db(store.execution.claim, occ.id, now)
    assert isinstance(claim, Claim), claim
    policy = NotifyPolicy(frozenset({"succeeded"}), ("log",))
    outbox = outbox_for(policy, "succeeded", claim.payment, claim.occurrence, claim.attempt, now)
    claim = replace(claim, on_success=tuple(outbox))

    settling, resume = threading.Event(), threading.Event()
    settler: list[int] = []
    payment_locks: list[str] = []  # the cancel's: one, unless it ran again as a victim

    def pause_before_notifying(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("SELECT payments.state"):
            payment_locks.append(statement)
        notifying = statement.lstrip().upper().startswith("INSERT INTO NOTIFICATIONS")
        if notifying and threading.get_ident() in settler and not settling.is_set():
            settling.set()
            assert resume.wait(timeout=30)

    def settle() -> list[Any]:
        settler.append(threading.get_ident())
        return store.execution.settle_many([claim], now)

    event.listen(store.engine, "before_cursor_execute", pause_before_notifying)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            settled = pool.submit(settle)
            assert await asyncio.to_thread(settling.wait, 30)
            cancel = asyncio.create_task(api.post(f"/v1/payments/{pid}/cancel", None, "write"))

            async def cancel_waits() -> bool:
                return cancel.done() or await asyncio.to_thread(waiting_on_a_lock, store)

            await wait_for(cancel_waits, 30, "the cancel to wait for the settle")
            resume.set()
            assert await asyncio.to_thread(settled.result, 30) == [True]
            answer = await asyncio.wait_for(cancel, 30)
    finally:
        resume.set()
        event.remove(store.engine, "before_cursor_execute", pause_before_notifying)
    body = problem(answer, 409, "conflict")
    # It waited for the settle and ran once: no deadlock, not even one retried.
    assert len(payment_locks) == 1, payment_locks
    assert body["detail"] == f"payment {pid} has already run; nothing left to cancel"
    assert (await api.get(f"/v1/payments/{pid}")).json()["status"] == "succeeded"
    assert (await api.get("/v1/accounts/bob")).json()["balance"] == "10.00"


async def test_create_then_cancel_with_the_worker_running_is_200_or_a_true_409(api: Api) -> None:
    """The hostile client's rounds: each payment due at once, cancelled at once, a worker
    running. Each cancel wins (200) or says truly why not (409); never a 503. Whatever it said
    holds once the worker is done, and the money matches."""
    app = api.app
    await fund(app, {"alice": 100_000, "bob": 0})
    answers: dict[int, httpx.Response] = {}
    async with running(app):
        for _ in range(15):
            body = {"from": "alice", "to": "bob", "amount": "1.00", "in": "0s"}
            created = await api.post("/v1/payments", body, "write")
            assert created.status_code == 201, created.text
            pid = created.json()["id"]
            answers[pid] = await api.post(f"/v1/payments/{pid}/cancel", None, "write")
        occurrences = await all_final(app, list(answers))
    final = {o.payment_id: o.state for o in occurrences}
    for pid, answer in answers.items():
        if answer.status_code == 200:
            assert final[pid] in (S.CANCELLED, S.SUCCEEDED), (pid, final[pid])
            in_flight = [o["key"] for o in answer.json()["in_flight"]]
            assert (final[pid] == S.SUCCEEDED) == bool(in_flight), (answer.json(), final[pid])
        else:
            body = problem(answer, 409, "conflict")
            assert body["detail"] in (
                f"payment {pid} has already run; nothing left to cancel",
                f"payment {pid} is executing now and cannot be cancelled; it will finish",
            ), body
            assert final[pid] == S.SUCCEEDED, (pid, final[pid])
    paid = sum(state == S.SUCCEEDED for state in final.values())
    assert (await api.get("/v1/accounts/bob")).json()["balance"] == f"{paid}.00"
