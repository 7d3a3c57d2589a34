"""Approvals before money moves: an occurrence of a payment that requires approval waits in
awaiting_approval, is never claimed, and runs once only after someone other than its creator
approves it; rejected or timed out, it never runs (issue 24 item 4)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from paysched.actors import Actor
from paysched.app import App
from paysched.clock import ManualClock
from paysched.config import Settings
from paysched.db import tables as t
from paysched.db.apikeys import ApiKeys
from paysched.db.links import ChatLinks
from paysched.db.store import NoClaim
from paysched.domain import Occurrence, OccurrenceState
from paysched.errors import Conflict
from tests.conftest import wait_for
from tests.integration.helpers import fund, running

S = OccurrenceState
# Someone other than the payments' creator (these tests create them as Actor.python()).
ALICE_KEY = Actor("cli", "cli (approver)", "cli")


async def approval_payment(
    app: App,
    *,
    in_s: float = 0.0,
    amount: int = 1000,
    actor: Actor | None = None,
    **extra: Any,
) -> int:
    payment = await app.create_payment(
        actor=actor or Actor.python(),
        payer="alice",
        payee="bob",
        amount=amount,
        currency="USD",
        due_at=app.clock.now() + timedelta(seconds=in_s),
        cron=None,
        timezone=None,
        memo="",
        **({"approval": "required"} | extra),
    )
    return payment.id


async def only(app: App, payment_id: int) -> Occurrence:
    occs = await app.db(app.store.reads.occurrences_of, payment_id)
    assert len(occs) == 1, occs
    return occs[0]


async def state_of(app: App, payment_id: int) -> OccurrenceState:
    return (await only(app, payment_id)).state


async def balances(app: App) -> tuple[int, int]:
    alice = await app.db(app.store.accounts.get_account, "alice")
    bob = await app.db(app.store.accounts.get_account, "bob")
    return alice.balance, bob.balance


async def link_chat(app: App, account: str, chat_id: str, role: str) -> None:
    """Link the chat as `role` the way a person does: a one-time token opened in the chat."""
    links = ChatLinks(app.store.engine)

    def link() -> None:
        issued = links.issue(account, app.clock.now(), timedelta(minutes=15), role=role)
        assert links.redeem(issued.token, chat_id, app.clock.now()).role == role

    await app.db(link)


async def notifications(app: App, payment_id: int) -> list[Any]:
    def read() -> list[Any]:
        with app.store.engine.connect() as conn:
            n = t.notifications.c
            return list(
                conn.execute(
                    select(t.notifications).where(n.payment_id == payment_id).order_by(n.id)
                )
            )

    return await app.db(read)


async def test_awaiting_never_executes_even_with_a_job_and_a_worker(app: App) -> None:
    await fund(app, {"alice": 5000, "bob": 0})
    pid = await approval_payment(app)
    occ = await only(app, pid)
    assert occ.state == S.AWAITING_APPROVAL
    history = await app.db(app.store.reads.transitions_of, [occ.id])
    assert [h.to_state for h in history] == [S.AWAITING_APPROVAL]
    assert "awaiting approval" in (history[0].reason or "")
    # A job for it anyway (one enqueued by mistake): the claim refuses it.
    assert app.queue is not None
    await app.queue.enqueue([occ], app.clock.now())
    claimed = await app.db(app.store.execution.claim, occ.id, app.clock.now(), occ.key)
    assert isinstance(claimed, NoClaim) and claimed.why == "awaiting"
    async with running(app):
        # The worker takes the job and ends it without running it; ticks pass meanwhile.
        async def job_done() -> bool:
            assert app.queue is not None
            return (await app.queue.presence([occ.key]))[occ.key] != "live"

        await wait_for(job_done, 20, "the job to be taken and refused")
        await app.scheduler.tick()  # type: ignore[union-attr]
    assert await state_of(app, pid) == S.AWAITING_APPROVAL
    assert await balances(app) == (5000, 0)


async def test_approve_executes_exactly_once(app: App) -> None:
    await fund(app, {"alice": 5000, "bob": 0})
    pid = await approval_payment(app)
    occ = await only(app, pid)
    async with running(app):
        decided = await app.decide_occurrence(occ.key, True, actor=ALICE_KEY)
        assert decided.state in (S.QUEUED, S.EXECUTING, S.SUCCEEDED)  # the worker is quick

        async def paid() -> bool:
            return await state_of(app, pid) == S.SUCCEEDED

        await wait_for(paid, 20, "the approved occurrence to run")
        with pytest.raises(Conflict, match="already approved"):
            await app.decide_occurrence(str(occ.id), True, actor=ALICE_KEY)
    assert await balances(app) == (4000, 1000)
    history = await app.db(app.store.reads.transitions_of, [occ.id])
    approved = [h for h in history if h.from_state == S.AWAITING_APPROVAL]
    assert approved[0].to_state == S.SCHEDULED
    assert approved[0].reason == "approved by cli (approver)"
    actions = await app.db(_actions, app, pid)
    assert [(a.action, a.actor_name, a.occurrence_id) for a in actions] == [
        ("create", Actor.python().name, None),
        ("approve", "cli (approver)", occ.id),
    ]


def _actions(app: App, pid: int) -> list[Any]:
    with app.store.engine.connect() as conn:
        a = t.actions.c
        return list(conn.execute(select(t.actions).where(a.payment_id == pid).order_by(a.id)))


async def test_reject_cancels_and_never_executes(app: App) -> None:
    await fund(app, {"alice": 5000, "bob": 0})
    pid = await approval_payment(app)
    occ = await only(app, pid)
    async with running(app):
        decided = await app.decide_occurrence(occ.key, False, "not this month", actor=ALICE_KEY)
        assert decided.state == S.CANCELLED
        with pytest.raises(Conflict, match="rejected or cancelled"):
            await app.decide_occurrence(occ.key, True, actor=ALICE_KEY)
        await app.scheduler.tick()  # type: ignore[union-attr]
    final = await only(app, pid)
    assert final.state == S.CANCELLED
    assert final.reason == "rejected by cli (approver): not this month"
    assert await balances(app) == (5000, 0)
    actions = await app.db(_actions, app, pid)
    assert actions[-1].action == "reject"
    assert json.loads(actions[-1].detail) == {"reason": "not this month"}


async def test_approve_racing_approve_and_reject_acts_once(app: App) -> None:
    await fund(app, {"alice": 50_000, "bob": 0})
    for rival in (True, False):
        pid = await approval_payment(app)
        occ = await only(app, pid)
        results = await asyncio.gather(
            *[app.decide_occurrence(occ.key, True, actor=ALICE_KEY) for _ in range(3)],
            app.decide_occurrence(occ.key, rival, "no", actor=ALICE_KEY),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, Occurrence)]
        lost = [r for r in results if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 3, results
        history = await app.db(app.store.reads.transitions_of, [occ.id])
        assert sum(h.from_state == S.AWAITING_APPROVAL for h in history) == 1
        decisions = [a for a in await app.db(_actions, app, pid) if a.action != "create"]
        assert len(decisions) == 1


async def test_four_eyes_the_creator_cannot_approve(app: App) -> None:
    await fund(app, {"alice": 5000, "bob": 0})
    keys = ApiKeys(app.store.engine)
    mine = (await app.db(keys.create, "ops", "approve", app.clock.now()))[0]
    other = (await app.db(keys.create, "other", "approve", app.clock.now()))[0]
    key = Actor.of_key(mine, "api")
    pid = await approval_payment(app, actor=key)
    occ = await only(app, pid)
    # The same key, even under another name (renamed since).
    with pytest.raises(Conflict, match="four eyes"):
        await app.decide_occurrence(
            occ.key, True, actor=Actor("api_key", "renamed", "api", mine.id)
        )
    with pytest.raises(Conflict, match="four eyes"):
        await app.decide_occurrence(occ.key, False, "mine", actor=key)
    pid2 = await approval_payment(app)  # created through the Python API by this user
    with pytest.raises(Conflict, match="four eyes"):
        await app.decide_occurrence(str((await only(app, pid2)).id), True, actor=Actor.python())
    assert await state_of(app, pid) == S.AWAITING_APPROVAL
    assert await state_of(app, pid2) == S.AWAITING_APPROVAL
    # Another key may.
    approved = await app.decide_occurrence(occ.key, True, actor=Actor.of_key(other, "api"))
    assert approved.state in (S.SCHEDULED, S.QUEUED)


@pytest.mark.parametrize("on_timeout, target", [("skip", S.SKIPPED), ("fail", S.FAILED)])
async def test_timeout_skips_or_fails(app: App, on_timeout: str, target: S) -> None:
    await fund(app, {"alice": 5000, "bob": 0})
    pid = await approval_payment(
        app, approval_timeout=timedelta(hours=2), approval_on_timeout=on_timeout
    )
    occ = await only(app, pid)
    assert occ.approval_deadline == occ.due_at + timedelta(hours=2)
    sched = app.scheduler
    assert sched is not None
    assert await sched.expire_approvals(occ.due_at + timedelta(minutes=119)) == 0
    assert await state_of(app, pid) == S.AWAITING_APPROVAL
    assert await sched.expire_approvals(occ.due_at + timedelta(hours=2)) == 1
    final = await only(app, pid)
    assert final.state == target
    assert final.reason == "no approval within 2h"
    history = await app.db(app.store.reads.transitions_of, [occ.id])
    assert (history[-1].from_state, history[-1].to_state) == (S.AWAITING_APPROVAL, target)
    with pytest.raises(Conflict, match="no longer awaits approval"):
        await app.decide_occurrence(occ.key, True, actor=ALICE_KEY)
    events = [n.event for n in await notifications(app, pid)]
    assert "approval_timeout" in events
    assert await balances(app) == (5000, 0)


async def test_approval_needed_goes_to_approver_chats_with_buttons(app: App) -> None:
    await fund(app, {"alice": 5000, "bob": 0})
    await link_chat(app, "alice", "111", "approver")
    await link_chat(app, "alice", "222", "holder")
    await link_chat(app, "bob", "333", "approver")
    payment = await app.create_payment(
        actor=Actor.python(),
        payer="alice",
        payee="bob",
        amount=1000,
        currency="USD",
        due_at=app.clock.now(),
        cron=None,
        timezone=None,
        memo="",
        notify=["log"],
        approval="required",
    )
    occ = await only(app, payment.id)
    rows = await notifications(app, payment.id)
    sent = {(n.channel, n.target): json.loads(n.payload) for n in rows}
    assert set(sent) == {("telegram", "111"), ("log", "")}, sent
    assert all(n.event == "approval_needed" for n in rows)
    assert sent[("telegram", "111")]["buttons"] == [
        [
            {"text": "✅ Approve", "callback_data": f"approve:{occ.id}"},
            {"text": "🚫 Reject", "callback_data": f"reject:{occ.id}"},
        ]
    ]
    assert "buttons" not in sent[("log", "")]
    assert "awaits approval" in sent[("log", "")]["text"]


async def test_account_rule_applies_above_the_amount_only(app: App) -> None:
    await fund(app, {"alice": 50_000, "bob": 0})
    await app.db(app.store.approvals.set_approval_above, "alice", 10_000)
    above = await approval_payment(app, amount=10_001, approval="none")
    at = await approval_payment(app, amount=10_000, approval="none")
    assert await state_of(app, above) == S.AWAITING_APPROVAL
    assert (await app.db(app.store.payments.get_payment, above)).approval == "required"
    assert await state_of(app, at) in (S.SCHEDULED, S.QUEUED)
    assert (await app.db(app.store.payments.get_payment, at)).approval == "none"


async def test_the_schedulers_tick_sweeps_expired_approvals(settings: Settings) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    app = await App.open(settings, clock=clock)
    try:
        await fund(app, {"alice": 5000, "bob": 0})
        pid = await approval_payment(app, approval_timeout=timedelta(minutes=5))
        sched = app.scheduler
        assert sched is not None
        clock.advance(timedelta(minutes=4, seconds=59))
        await sched.tick()
        assert await state_of(app, pid) == S.AWAITING_APPROVAL
        clock.advance(timedelta(seconds=1))
        await sched.tick()
        final = await only(app, pid)
        assert (final.state, final.reason) == (S.SKIPPED, "no approval within 5m")
    finally:
        await app.close()


async def test_python_api_schedules_with_approval_and_four_eyes_holds(settings: Settings) -> None:
    import paysched
    from paysched.errors import InvalidInput

    async with paysched.open(settings) as ps:
        await ps.create_account("alice")
        await ps.create_account("bob")
        await ps.deposit("alice", "50.00")
        payment = await ps.schedule(
            payer="alice",
            payee="bob",
            amount="5.00",
            in_="0s",
            approval="required",
            approval_timeout="2h",
            on_timeout="fail",
        )
        assert (payment.approval, payment.approval_timeout, payment.approval_on_timeout) == (
            "required",
            timedelta(hours=2),
            "fail",
        )
        [occ] = (await ps.get_payment(payment.id)).occurrences
        assert occ.state == S.AWAITING_APPROVAL
        with pytest.raises(Conflict, match="four eyes"):  # this user created it
            await ps.approve(occ.key)
        with pytest.raises(InvalidInput, match="reason"):
            await ps.reject(occ.id, " ")
        with pytest.raises(InvalidInput) as bad:
            await ps.schedule(
                payer="alice", payee="bob", amount="1.00", in_="0s", on_timeout="skip"
            )
        assert bad.value.field == "on_timeout"
        rejected = await ps.app.decide_occurrence(occ.key, False, "no", actor=ALICE_KEY)
        assert rejected.state == S.CANCELLED
