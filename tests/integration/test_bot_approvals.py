"""Approve / Reject buttons in the chat (issue 24 item 4): only an approver chat of the paying
account decides, once; a holder's chat, another account's approver and a stale button change
nothing. Against the local Bot API server (tests/http_peers.BotApi) over real HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from paysched.actors import Actor
from paysched.app import App
from paysched.bot import approvals, messages
from paysched.clock import ManualClock
from paysched.config import Settings
from paysched.db import tables as t
from paysched.db.actions import Acting, Subject
from paysched.domain import OccurrenceState
from paysched.notify.telegram import TelegramNotifier
from tests.http_peers import BotApi
from tests.integration.helpers import fund
from tests.integration.test_approvals import link_chat, notifications
from tests.integration.test_bot import TOKEN, bapp, bot_api, bot_running, bot_settings

__all__ = ["bapp", "bot_api", "bot_settings"]  # fixtures
S = OccurrenceState
APPROVER, HOLDER, OTHER, STRANGER = 5101, 5102, 5103, 5104  # chat ids


async def awaiting(app: App) -> int:
    """A payment alice -> bob that requires approval, its occurrence made: the occurrence's id."""
    now = app.clock.now()
    acting = Acting(Actor.python(), "create", now, lambda p: Subject(p.id))
    payment = await app.db(
        app.store.payments.create_payment,
        payer="alice",
        payee="bob",
        amount=700,
        currency="EUR",
        due_at=now + timedelta(seconds=30),
        cron=None,
        timezone=None,
        memo="",
        now=now,
        approval="required",
        then=acting.then(),
    )
    [occ] = await app.db(
        app.store.payments.materialize_due, now, now + timedelta(minutes=1), [payment.id]
    )
    assert occ.state == S.AWAITING_APPROVAL
    return occ.id


async def press(api: BotApi, chat: int, data: str) -> str:
    before = len(api.answered)
    api.press(chat, data)
    await asyncio.to_thread(api.wait, lambda: len(api.answered) > before)
    return str(api.answered[before].get("text"))


async def state(app: App, occurrence_id: int) -> S:
    return (await app.db(app.store.reads.get_occurrence, occurrence_id)).state


async def test_only_the_payers_approver_chat_decides_once(bapp: App, bot_api: BotApi) -> None:
    await fund(bapp, {"alice": 5000, "bob": 0}, "EUR")
    await link_chat(bapp, "alice", str(APPROVER), "approver")
    await link_chat(bapp, "alice", str(HOLDER), "holder")
    await link_chat(bapp, "bob", str(OTHER), "approver")
    first, second = await awaiting(bapp), await awaiting(bapp)
    async with bot_running(bapp):
        assert await press(bot_api, HOLDER, f"approve:{first}") == approvals.NOT_APPROVER
        assert await press(bot_api, OTHER, f"reject:{first}") == approvals.NOT_APPROVER
        assert await press(bot_api, STRANGER, f"approve:{first}") == messages.NOT_LINKED_SHORT
        assert await state(bapp, first) == S.AWAITING_APPROVAL
        said = await press(bot_api, APPROVER, f"approve:{first}")
        assert said.startswith("✅ Approved payment #") and "7.00 EUR" in said, said
        assert await state(bapp, first) == S.SCHEDULED
        await asyncio.to_thread(bot_api.wait, lambda: bot_api.edited)  # the buttons are gone
        assert bot_api.edited[-1]["text"].endswith(said)  # the message, then what happened
        stale = await press(bot_api, APPROVER, f"reject:{first}")
        assert "already approved" in stale
        assert await state(bapp, first) == S.SCHEDULED
        said = await press(bot_api, APPROVER, f"reject:{second}")
        assert said.startswith("🚫 Rejected payment #"), said
        assert await state(bapp, second) == S.CANCELLED
    decided = await bapp.db(_decisions, bapp)
    assert decided == [
        ("approve", "chat", f"telegram:{APPROVER}", "chat", first),
        ("reject", "chat", f"telegram:{APPROVER}", "chat", second),
    ]


async def test_inside_run_an_approval_from_the_chat_is_queued_at_once(
    bot_settings: Settings, bot_api: BotApi
) -> None:
    """With the bot inside `paysched run` (an App with a queue), Approve queues the occurrence
    at once, as the API's approve does: it does not wait for the scheduler's next tick."""
    app = await App.open(bot_settings, clock=ManualClock(datetime.now(UTC)))
    try:
        await fund(app, {"alice": 5000, "bob": 0}, "EUR")
        await link_chat(app, "alice", str(APPROVER), "approver")
        occurrence_id = await awaiting(app)
        async with bot_running(app):
            said = await press(bot_api, APPROVER, f"approve:{occurrence_id}")
            assert said.startswith("✅ Approved payment #"), said
        occ = await app.db(app.store.reads.get_occurrence, occurrence_id)
        assert occ.state == S.QUEUED
        assert app.queue is not None
        assert await app.queue.job_states([occ.key]) == {occ.key: "delayed"}
    finally:
        await app.close()


def _decisions(app: App) -> list[tuple[object, ...]]:
    a = t.actions.c
    with app.store.engine.connect() as conn:
        rows = conn.execute(
            select(a.action, a.actor_kind, a.actor_name, a.via, a.occurrence_id)
            .where(a.action.in_(["approve", "reject"]))
            .order_by(a.id)
        )
        return [tuple(r) for r in rows]


async def test_approval_needed_is_sent_with_its_buttons(bapp: App, bot_api: BotApi) -> None:
    await fund(bapp, {"alice": 5000, "bob": 0}, "EUR")
    await link_chat(bapp, "alice", str(APPROVER), "approver")
    occurrence_id = await awaiting(bapp)
    [row] = [n for n in await notifications(bapp, 1) if n.channel == "telegram"]
    notifier = TelegramNotifier(TOKEN, bot_api.url)
    try:
        await notifier.send(row.target, json.loads(row.payload), row.dedup_key)
    finally:
        await notifier.close()
    [sent] = bot_api.sent
    assert str(sent["chat_id"]) == str(APPROVER) and "awaits approval" in sent["text"]
    keyboard = sent["reply_markup"]["inline_keyboard"]
    assert [b["callback_data"] for b in keyboard[0]] == [
        f"approve:{occurrence_id}",
        f"reject:{occurrence_id}",
    ]
