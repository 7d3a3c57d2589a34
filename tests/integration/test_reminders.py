"""Reminders with buttons: the scheduler's sweep writes each reminder once (concurrent sweeps
too), the deliverer sends it with its inline keyboard to the local Bot API stand-in over
HTTP, and Skip / Pause act once, through the App, for the payer's linked chats only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from paysched.actors import Actor
from paysched.app import App, build_registry
from paysched.bot import messages
from paysched.bot.reminders import reminder_outbox
from paysched.clock import ManualClock, to_ms
from paysched.config import Settings
from paysched.db import tables as t
from paysched.db.actions import actions_of
from paysched.db.links import ChatLinks
from paysched.db.store import Store
from paysched.db.store.execution import Finish, NoClaim
from paysched.domain import OccurrenceState, PaymentState
from paysched.notify.delivery import Deliverer
from tests.http_peers import BotApi
from tests.integration.helpers import all_final, fund, running
from tests.integration.test_bot import TOKEN, bot_running

ALICE, ALICE2, BOB, MALLORY = 4201, 4202, 4301, 4666  # chat ids
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
S = OccurrenceState


def link(engine: Any, account: str, chat: int, now: datetime) -> None:
    links = ChatLinks(engine)
    issued = links.issue(account, now, timedelta(hours=1))
    links.redeem(issued.token, str(chat), now)


def daily(store: Store, now: datetime, remind: timedelta | None, **more: Any) -> int:
    """alice -> bob 12.34 USD every day at 09:00 UTC."""
    return store.payments.create_payment(
        payer="alice",
        payee="bob",
        amount=1234,
        currency="USD",
        due_at=None,
        cron="0 9 * * *",
        timezone=None,
        memo="rent",
        now=now,
        remind=remind,
        **more,
    ).id


def reminders(store: Store) -> list[Any]:
    n = t.notifications.c
    with store.engine.connect() as conn:
        return list(conn.execute(select(t.notifications).where(n.event == "reminder")))


# -- the sweep ---------------------------------------------------------------------------------


def test_each_occurrence_is_reminded_once_in_its_window(store: Store) -> None:
    for name in ("alice", "bob"):
        store.accounts.create_account(name, "USD", T0)
    link(store.engine, "alice", ALICE, T0)
    link(store.engine, "alice", ALICE2, T0)
    link(store.engine, "bob", BOB, T0)  # the payee's chat is not reminded
    reminding = daily(store, T0, timedelta(hours=2))  # due 09:00: in its window at 07:00
    later = daily(store, T0, timedelta(minutes=59))  # in its window at 08:01
    daily(store, T0, None)  # never reminded
    assert store.reminders.remind_due(T0 - timedelta(hours=1, seconds=1), reminder_outbox) == 0
    assert store.reminders.remind_due(T0, reminder_outbox) == 1
    rows = reminders(store)
    assert sorted(r.target for r in rows) == [str(ALICE), str(ALICE2)]
    assert {r.payment_id for r in rows} == {reminding}
    due = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert {r.dedup_key for r in rows} == {
        f"remind:{reminding}:{to_ms(due)}:{ALICE}",
        f"remind:{reminding}:{to_ms(due)}:{ALICE2}",
    }
    body = json.loads(rows[0].payload)
    assert body["text"] == messages.reminder(
        reminding, due, 1234, "USD", "alice", "bob", None, "rent"
    )
    assert body["buttons"] == messages.reminder_buttons(reminding, to_ms(due))
    # Again, and again later: nothing more of that occurrence.
    assert store.reminders.remind_due(T0, reminder_outbox) == 0
    assert store.reminders.remind_due(T0 + timedelta(seconds=59), reminder_outbox) == 0
    assert len(reminders(store)) == 2
    # Exactly at its window's start: the other one.
    assert store.reminders.remind_due(due - timedelta(minutes=59), reminder_outbox) == 1
    assert {r.payment_id for r in reminders(store)} == {reminding, later}
    # Once the occurrence is made, the next of the series is reminded in its own window.
    store.payments.materialize_due(due, due)
    assert store.reminders.remind_due(due + timedelta(hours=21), reminder_outbox) == 0
    assert store.reminders.remind_due(due + timedelta(hours=22), reminder_outbox) == 1
    assert len(reminders(store)) == 6


def test_a_reminder_shorter_than_the_look_ahead_names_the_made_occurrence(store: Store) -> None:
    """The scheduler makes an occurrence its look-ahead (5 minutes) before it is due, and the
    series moves on: a 2-minute reminder names that made occurrence, once, until it starts."""
    for name in ("alice", "bob"):
        store.accounts.create_account(name, "USD", T0)
    link(store.engine, "alice", ALICE, T0)
    pid = daily(store, T0, timedelta(minutes=2))
    due = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    (made,) = store.payments.materialize_due(due - timedelta(minutes=5), due)
    assert made.due_at == due
    assert store.payments.get_payment(pid).next_due_at == due + timedelta(days=1)
    assert store.reminders.remind_due(due - timedelta(minutes=2, seconds=1), reminder_outbox) == 0
    assert store.reminders.remind_due(due - timedelta(minutes=2), reminder_outbox) == 1
    assert [r.dedup_key for r in reminders(store)] == [f"remind:{pid}:{to_ms(due)}:{ALICE}"]
    assert store.reminders.remind_due(due - timedelta(minutes=1), reminder_outbox) == 0
    # The next day's: made, then claimed before its window opens — never reminded.
    tomorrow = due + timedelta(days=1)
    (nxt,) = store.payments.materialize_due(tomorrow - timedelta(minutes=5), tomorrow)
    assert not isinstance(store.execution.claim(nxt.id, tomorrow - timedelta(minutes=3)), NoClaim)
    assert store.reminders.remind_due(tomorrow - timedelta(minutes=1), reminder_outbox) == 0
    # A 24-hour reminder already sent from the series is not sent again once it is made.
    store.accounts.set_account_remind("alice", None)
    with store.engine.begin() as conn:
        conn.execute(t.payments.update().values(remind_s=86400, reminded_due_at=None))
    day3 = tomorrow + timedelta(days=1)
    assert store.reminders.remind_due(tomorrow + timedelta(minutes=1), reminder_outbox) == 1
    store.payments.materialize_due(day3 - timedelta(minutes=5), day3)
    assert store.reminders.remind_due(day3 - timedelta(minutes=1), reminder_outbox) == 0
    assert len(reminders(store)) == 2
    # Past its due time, a made occurrence is no longer reminded of.
    late = daily(store, day3, timedelta(minutes=2))
    day4 = day3 + timedelta(days=1)
    store.payments.materialize_due(day4 - timedelta(minutes=5), day4, [late])
    assert store.reminders.remind_due(day4 + timedelta(seconds=1), reminder_outbox) == 0
    assert len(reminders(store)) == 2


def test_account_default_is_copied_into_new_payments(store: Store) -> None:
    store.accounts.create_account("alice", "USD", T0, remind=timedelta(hours=24))
    store.accounts.create_account("bob", "USD", T0)
    assert store.accounts.get_account("alice").remind == timedelta(hours=24)
    assert store.payments.get_payment(daily(store, T0, None)).remind == timedelta(hours=24)
    assert store.payments.get_payment(daily(store, T0, timedelta(hours=1))).remind == timedelta(
        hours=1
    )
    store.accounts.set_account_remind("alice", None)
    assert store.payments.get_payment(daily(store, T0, None)).remind is None


def test_skip_occurrence_skips_that_one_only_or_says_why_not(store: Store) -> None:
    from paysched.db.store.control import NotSkippable

    for name in ("alice", "bob"):
        store.accounts.create_account(name, "USD", T0)
    store.accounts.deposit("alice", 100_00, T0)
    pid = daily(store, T0, timedelta(hours=1))
    day = timedelta(days=1)
    first, second = store.payments.materialize_due(T0, T0 + day + timedelta(hours=2), [pid])
    # The second of two waiting: the first stays as it is.
    skipped = store.control.skip_occurrence(pid, second.due_at, T0, "from a reminder")
    assert (skipped.id, skipped.state) == (second.id, S.SKIPPED)
    states = {o.id: o.state for o in store.reads.occurrences_of(pid)}
    assert states == {first.id: S.SCHEDULED, second.id: S.SKIPPED}
    assert isinstance(store.execution.claim(second.id, second.due_at), NoClaim)
    with pytest.raises(NotSkippable) as again:
        store.control.skip_occurrence(pid, second.due_at, T0, "again")
    assert again.value.why == "skipped"
    # Begun: too late.
    assert not isinstance(store.execution.claim(first.id, first.due_at), NoClaim)
    with pytest.raises(NotSkippable) as begun:
        store.control.skip_occurrence(pid, first.due_at, T0, "late")
    assert begun.value.why == "ran"
    # The next one, not made yet: made as skipped, and the series moves on past it.
    nxt = store.payments.get_payment(pid).next_due_at
    assert nxt == second.due_at + day
    made = store.control.skip_occurrence(pid, nxt, T0, "from a reminder")
    assert made.state == S.SKIPPED and made.due_at == nxt
    assert store.payments.get_payment(pid).next_due_at == nxt + day
    assert store.payments.materialize_due(nxt, nxt + timedelta(hours=1), [pid]) == []
    # A due time the series never had, or is past: out of date.
    with pytest.raises(NotSkippable) as gone:
        store.control.skip_occurrence(pid, nxt + day + timedelta(minutes=1), T0, "?")
    assert gone.value.why == "gone"
    store.control.cancel_payment(pid, T0, "done with it")
    with pytest.raises(NotSkippable) as cancelled:
        store.control.skip_occurrence(pid, nxt + day, T0, "late")
    assert cancelled.value.why == "cancelled"
    assert {o.id: o.state for o in store.reads.occurrences_of(pid)}[first.id] == S.EXECUTING


def test_an_occurrence_queued_again_after_an_attempt_is_too_late_to_skip(store: Store) -> None:
    """An attempt whose answer was lost, the provider then saying it never received it: the
    occurrence is queued again to be sent, but it has begun — a reminder's Skip (and skip
    next) is too late for it (the chaos run's skip_holds found one skipped)."""
    from paysched.db.store.control import NotSkippable

    for name in ("alice", "bob"):
        store.accounts.create_account(name, "USD", T0)
    pid = daily(store, T0, timedelta(hours=1))
    due = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    (occ,) = store.payments.materialize_due(due - timedelta(minutes=5), due)
    claim = store.execution.claim(occ.id, due)
    assert not isinstance(claim, NoClaim)
    lost = Finish(claim, S.UNKNOWN, "no answer from provider within 1 s", resolve_at=due)
    assert store.execution.finish_many([lost], due) == [True]
    later = due + timedelta(hours=1)
    (leased,) = store.execution.lease_unknowns(later, timedelta(minutes=1))
    sent_again = "provider never received it; sending it again"
    assert store.execution.resolve(leased, S.QUEUED, later, sent_again)
    again = store.reads.get_occurrence(occ.id)
    assert again.state == S.QUEUED and again.attempts == 1
    with pytest.raises(NotSkippable) as begun:
        store.control.skip_occurrence(pid, due, later, "from a reminder")
    assert begun.value.why == "ran"
    # Skip next passes it by: the next of the series is the one skipped.
    skipped = store.control.skip_next(pid, later, "skip next")
    assert skipped.due_at == due + timedelta(days=1) and skipped.id != occ.id
    assert store.reads.get_occurrence(occ.id).state == S.QUEUED


@pytest.fixture
def two_stores(database_url: str) -> Iterator[tuple[Store, Store]]:
    a, b = Store.connect(database_url), Store.connect(database_url)
    a.migrate()
    yield a, b
    a.close()
    b.close()


def test_two_concurrent_sweeps_write_each_reminder_once(two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    for name in ("alice", "bob"):
        a.accounts.create_account(name, "USD", T0)
    link(a.engine, "alice", ALICE, T0)
    link(a.engine, "alice", ALICE2, T0)
    rounds = 40
    # One payment per round, each entering its window at its round's instant.
    ids = [
        a.payments.create_payment(
            payer="alice",
            payee="bob",
            amount=1,
            currency="USD",
            due_at=T0 + timedelta(hours=1, seconds=i),
            cron=None,
            timezone=None,
            memo="",
            now=T0 - timedelta(hours=1),
            remind=timedelta(hours=1),
        ).id
        for i in range(rounds)
    ]
    barrier = threading.Barrier(2)
    written: list[int] = []
    errors: list[BaseException] = []

    def sweeper(store: Store) -> None:
        for i in range(rounds):
            barrier.wait()
            try:
                written.append(
                    store.reminders.remind_due(T0 + timedelta(seconds=i), reminder_outbox, 5)
                )
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=sweeper, args=(s,)) for s in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    rows = reminders(a)
    assert sum(written) == rounds  # each payment marked by one sweep only
    assert len(rows) == 2 * rounds == len({r.dedup_key for r in rows})
    assert sorted(r.payment_id for r in rows) == sorted(ids * 2)


async def test_the_schedulers_tick_writes_the_reminders_due(app: App) -> None:
    await fund(app, {"alice": 0, "bob": 0})
    await app.db(link, app.store.engine, "alice", ALICE, app.clock.now())
    payment = await app.create_payment(
        actor=Actor.python(),
        payer="alice",
        payee="bob",
        amount=100,
        currency="USD",
        due_at=app.clock.now() + timedelta(hours=2),
        cron=None,
        timezone=None,
        memo="",
        remind=timedelta(hours=3),
    )
    assert app.scheduler is not None
    await app.scheduler.tick()
    await app.scheduler.tick()
    assert [(r.payment_id, r.target) for r in reminders(app.store)] == [(payment.id, str(ALICE))]


# -- sent with buttons, pressed ----------------------------------------------------------------


@pytest.fixture
def bot_api() -> Iterator[BotApi]:
    api = BotApi(TOKEN).start()
    yield api
    api.stop()


@pytest.fixture
def bot_env(env: dict[str, str], bot_api: BotApi) -> dict[str, str]:
    return env | {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": bot_api.url}


@pytest.fixture
async def bapp(bot_env: dict[str, str]) -> AsyncIterator[App]:
    """An App as `paysched bot` opens one (no queue), on a clock the test moves."""
    clock = ManualClock(T0 - timedelta(hours=1))  # an hour before alice's next payment
    app = await App.open(Settings.from_env(bot_env), clock=clock, with_queue=False)
    yield app
    await app.close()


@contextlib.asynccontextmanager
async def serving(app: App, **roles: bool) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop, **roles))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def remind_and_send(app: App, api: BotApi, count: int) -> None:
    """The sweep, then the deliverer's pass: `count` reminders reach the stand-in."""
    before = len(api.sent)
    await app.db(app.store.reminders.remind_due, app.clock.now(), reminder_outbox)
    assert app.outbox is not None
    deliverer = Deliverer(app.outbox, build_registry(app.settings), app.clock, app.pool)
    try:
        await deliverer.deliver_due()
    finally:
        await deliverer.registry.close()
    await asyncio.to_thread(api.wait, lambda: len(api.sent) >= before + count)
    assert len(api.sent) == before + count


async def press(api: BotApi, chat: int, data: str, message: dict[str, Any] | None = None) -> str:
    """What the bot answers `chat` pressing the button `data` (under `message`), once it has
    also edited that message if it does."""
    before, edits = len(api.answered), len(api.edited)
    text = str(message["text"]) if message else "…"
    api.press(chat, data, message_id=7, text=text)
    await asyncio.to_thread(api.wait, lambda: len(api.answered) > before)
    answer = str(api.answered[before]["text"])
    if answer not in (messages.NOT_LINKED_SHORT, messages.UNKNOWN_BUTTON):
        await asyncio.to_thread(api.wait, lambda: len(api.edited) > edits)
    return answer


def sent_to(api: BotApi, chat: int) -> dict[str, Any]:
    return next(m for m in reversed(api.sent) if str(m["chat_id"]) == str(chat))


def button(message: dict[str, Any], label: str) -> str:
    keyboard = message["reply_markup"]["inline_keyboard"]
    return str(next(b["callback_data"] for row in keyboard for b in row if b["text"] == label))


async def chat_actions(app: App, payment_id: int) -> list[tuple[str, str]]:
    listed = await app.db(actions_of, app.store.engine, payment_id)
    return [(a.action, a.actor.name) for a in listed if a.actor.kind == "chat"]


async def setup_alice(app: App) -> int:
    await fund(app, {"alice": 100_00, "bob": 0, "mallory": 0})
    for account, chat in (("alice", ALICE), ("alice", ALICE2), ("mallory", MALLORY)):
        await app.db(link, app.store.engine, account, chat, app.clock.now())
    payment = await app.db(
        app.store.payments.create_payment,
        payer="alice",
        payee="bob",
        amount=1234,
        currency="USD",
        due_at=None,
        cron="0 9 * * *",
        timezone="Europe/Berlin",
        memo="rent",
        now=app.clock.now(),
        remind=timedelta(hours=3),
    )
    return payment.id


async def test_reminder_skip_acts_once_for_the_payers_chats(bapp: App, bot_api: BotApi) -> None:
    pid = await setup_alice(bapp)  # next: 09:00 Berlin = 08:00 UTC = T0
    await remind_and_send(bapp, bot_api, 2)
    due = T0
    reminder = sent_to(bot_api, ALICE)
    assert reminder["text"] == messages.reminder(
        pid, due, 1234, "USD", "alice", "bob", "Europe/Berlin", "rent"
    )
    assert "Tue 01 Dec 2026, 09:00 Europe/Berlin" in reminder["text"]
    assert reminder["reply_markup"]["inline_keyboard"] == messages.reminder_buttons(pid, to_ms(due))
    assert sent_to(bot_api, ALICE2)["text"] == reminder["text"]
    assert not bot_api.texts(MALLORY)
    skip = button(reminder, messages.SKIP_BUTTON)
    assert skip == f"skip:{pid}:{to_ms(due)}"
    async with bot_running(bapp):
        # A chat linked to another account: refused, nothing changed, nothing edited.
        assert await press(bot_api, MALLORY, skip, reminder) == messages.NOT_LINKED_SHORT
        assert await press(bot_api, BOB, skip, reminder) == messages.NOT_LINKED_SHORT
        assert not bot_api.edited
        assert (await bapp.db(bapp.store.payments.get_payment, pid)).next_due_at == due
        # The payer's chat: that occurrence is skipped, the series goes on.
        assert await press(bot_api, ALICE, skip, reminder) == messages.SKIPPED
        assert bot_api.edited[-1]["text"] == messages.pressed(reminder["text"], messages.SKIPPED)
        assert "reply_markup" not in bot_api.edited[-1]  # its buttons are gone
        # A double tap, and the other linked chat: done once.
        assert await press(bot_api, ALICE, skip, reminder) == messages.ALREADY_SKIPPED
        assert await press(bot_api, ALICE2, skip, reminder) == messages.ALREADY_SKIPPED
    occurrences = await bapp.db(bapp.store.reads.occurrences_of, pid)
    assert [(o.due_at, o.state) for o in occurrences] == [(due, S.SKIPPED)]
    payment = await bapp.db(bapp.store.payments.get_payment, pid)
    assert payment.state == PaymentState.ACTIVE and payment.next_due_at == due + timedelta(days=1)
    assert await chat_actions(bapp, pid) == [("skip", f"telegram:{ALICE}")]
    # It never runs: the scheduler makes nothing more of that due time.
    made = await bapp.db(bapp.store.payments.materialize_due, due, due + timedelta(minutes=5))
    assert made == []


async def test_pause_acts_once_replayed_or_pressed_again(bapp: App, bot_api: BotApi) -> None:
    """The same update handed over again (a webhook's retry, a restart) is dropped; the same
    button pressed again, or in the other linked chat, says it is done and changes nothing."""
    from paysched.bot.service import ChatBot

    pid = await setup_alice(bapp)
    await remind_and_send(bapp, bot_api, 2)
    reminder = sent_to(bot_api, ALICE)
    pause = button(reminder, messages.PAUSE_BUTTON)
    assert pause == f"pause:{pid}"
    update_id = bot_api.press(ALICE, pause, message_id=7, text=reminder["text"])
    for _ in range(2):  # the second: a restarted bot handed the same update
        bot = ChatBot(bapp.store.engine, bapp.clock, bapp.pool, TOKEN, bot_api.url, app=bapp)
        await bot.open()
        try:
            for _ in range(2):
                await bot.handle(bot.parse(bot_api.update(update_id)))
        finally:
            await bot.close()
    assert [a["text"] for a in bot_api.answered] == [messages.PAUSED]
    assert bot_api.edited[-1]["text"] == messages.pressed(reminder["text"], messages.PAUSED)
    async with bot_running(bapp):
        assert await press(bot_api, ALICE2, pause, reminder) == messages.ALREADY_PAUSED
        assert await press(bot_api, ALICE, pause, reminder) == messages.ALREADY_PAUSED
    assert (await bapp.db(bapp.store.payments.get_payment, pid)).state == PaymentState.PAUSED
    assert await chat_actions(bapp, pid) == [("pause", f"telegram:{ALICE}")]


async def test_stale_buttons_change_nothing(bapp: App, bot_api: BotApi) -> None:
    pid = await setup_alice(bapp)
    await remind_and_send(bapp, bot_api, 2)
    reminder = sent_to(bot_api, ALICE)
    skip = button(reminder, messages.SKIP_BUTTON)
    await bapp.db(bapp.store.control.cancel_payment, pid, bapp.clock.now(), "cancelled by user")
    async with bot_running(bapp):
        assert await press(bot_api, ALICE, skip, reminder) == messages.TOO_LATE["cancelled"]
        pause = button(reminder, messages.PAUSE_BUTTON)
        assert await press(bot_api, ALICE, pause, reminder) == messages.TOO_LATE["cancelled"]
        # Args no button of ours carries.
        assert await press(bot_api, ALICE, "skip:x:1") == messages.UNKNOWN_BUTTON
        assert await press(bot_api, ALICE, f"skip:{pid}") == messages.UNKNOWN_BUTTON
        assert await press(bot_api, ALICE, "pay:1") == messages.UNKNOWN_BUTTON
        assert await press(bot_api, ALICE, "pause:99999") == messages.NOT_LINKED_SHORT
    assert await chat_actions(bapp, pid) == []


# -- the whole path: scheduler, worker, deliverer and bot in one process -----------------------


async def test_a_skipped_occurrence_never_runs_and_a_late_press_is_too_late(
    bot_env: dict[str, str], bot_api: BotApi
) -> None:
    app = await App.open(Settings.from_env(bot_env))
    try:
        await fund(app, {"alice": 100_00, "bob": 0})
        await app.db(link, app.store.engine, "alice", ALICE, app.clock.now())
        now = app.clock.now()
        ids = [
            (
                await app.db(
                    app.store.payments.create_payment,
                    payer="alice",
                    payee="bob",
                    amount=amount,
                    currency="USD",
                    due_at=now + timedelta(seconds=2),
                    cron=None,
                    timezone=None,
                    memo="",
                    now=now,
                    remind=timedelta(hours=1),
                )
            ).id
            for amount in (500, 700)
        ]
        skipped, paid = ids
        assert app.scheduler is not None
        await app.scheduler.remind(now)
        await app.scheduler.schedule_now(ids)  # made and queued: the skip takes a queued one
        async with bot_running(app):
            # Delivery only, no worker yet: the press comes before the occurrence could run.
            async with serving(app, scheduler=False, worker=False, deliver=True):
                await asyncio.to_thread(bot_api.wait, lambda: len(bot_api.texts(ALICE)) == 2)
            by_payment = {
                int(button(m, messages.PAUSE_BUTTON).split(":")[1]): m for m in bot_api.sent
            }
            first = by_payment[skipped]
            assert (
                await press(bot_api, ALICE, button(first, messages.SKIP_BUTTON), first)
                == messages.SKIPPED
            )
            async with running(app):
                final = {o.payment_id: o for o in await all_final(app, ids)}
            assert final[skipped].state == S.SKIPPED and final[paid].state == S.SUCCEEDED
            late = by_payment[paid]  # pressed after its occurrence ran
            assert (
                await press(bot_api, ALICE, button(late, messages.SKIP_BUTTON), late)
                == messages.TOO_LATE["ran"]
            )
        assert (await app.db(app.store.accounts.get_account, "alice")).balance == 100_00 - 700
        assert await chat_actions(app, skipped) == [("skip", f"telegram:{ALICE}")]
        assert await chat_actions(app, paid) == []
    finally:
        await app.close()
