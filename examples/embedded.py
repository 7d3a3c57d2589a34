"""paysched embedded in an asyncio application: a pretend chat-bot backend.

    python examples/embedded.py

The seed system scheduled payments from a Telegram bot's handlers. Here the "bot" is a few
functions that a chat would call; they schedule payments through the Python API, and the
event callbacks "reply" in the chat (print). The scheduler and workers run in this process,
in the same event loop as the bot.

It uses whatever REDIS_URL / DATABASE_URL / PAYSCHED_* say, like `paysched` itself (by
default: SQLite in the data dir, and the local Redis or the embedded one). Accounts that
already exist (a second run) are reused; the check at the end is on how balances changed.

Exit status 0 when every payment reached the expected outcome and the balances moved by
exactly those amounts; 1 otherwise (including anything unfinished after 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import timedelta
from decimal import Decimal

import paysched

DEADLINE_S = 30.0
OPENING_BALANCES = {"alice": Decimal("100.00"), "bob": Decimal("0.00"), "carol": Decimal("5.00")}


class Bot:
    """What a chat bot's handlers would do with paysched; `say` stands in for a chat reply."""

    def __init__(self, ps: paysched.Paysched) -> None:
        self.ps = ps

    def say(self, user: str, text: str) -> None:
        print(f"[bot -> {user}] {text}", flush=True)

    async def ensure_account(self, user: str, top_up: Decimal) -> None:
        with contextlib.suppress(paysched.Conflict):  # a second run: the account is still there
            await self.ps.create_account(user, currency="USD")
        if top_up:
            await self.ps.deposit(user, top_up)

    async def pay(self, user: str, to: str, amount: Decimal | str, in_s: float) -> int | None:
        """'/pay bob 12.34 in 2s': the id of the scheduled payment, or None if refused."""
        try:
            payment = await self.ps.schedule(
                payer=user, payee=to, amount=amount, currency="USD",
                in_=timedelta(seconds=in_s), memo=f"chat: {user} pays {to}",
            )  # fmt: skip
        except paysched.InvalidInput as exc:  # tell the user which part of the command is wrong
            self.say(user, f"sorry, {exc.field}: {exc.problem}")
            return None
        self.say(user, f"payment {payment.id} scheduled: {amount} USD to {to} in {in_s:g} s")
        return payment.id

    # -- event callbacks -------------------------------------------------------------------

    async def on_outcome(self, event: paysched.Event) -> None:
        """Async: it reads the payment to word the reply."""
        assert event.payment_id is not None
        detail = await self.ps.get_payment(event.payment_id)
        p = detail.payment
        if event.kind is paysched.EventKind.COMPLETED:
            amount = f"{detail.amount} {p.currency}"
            self.say(p.payer, f"payment {p.id} completed: {amount} to {p.payee}")
        else:
            self.say(p.payer, f"payment {p.id} failed: {event.detail.get('reason')}")

    def on_progress(self, event: paysched.Event) -> None:
        """Sync: runs inline on the loop, so it only prints."""
        step = event.detail.get("step")
        print(f"  [progress] payment {event.payment_id}: {event.detail.get('progress')}% {step}")


async def main() -> int:
    async with paysched.open() as ps:
        bot = Bot(ps)
        before = {}
        for user, top_up in OPENING_BALANCES.items():
            await bot.ensure_account(user, top_up)
            before[user] = paysched.to_decimal((await ps.get_account(user)).balance, "USD")

        ps.on(["completed", "failed"], bot.on_outcome)
        stop_progress = ps.on("progress", bot.on_progress)

        # A float is refused with the field named, never rounded.
        await bot.pay("alice", "bob", 12.34, in_s=1)  # type: ignore[arg-type]
        expected = {}
        if pid := await bot.pay("alice", "bob", Decimal("12.34"), in_s=1):
            expected[pid] = "succeeded"
        if pid := await bot.pay("alice", "carol", "7.50", in_s=1.5):
            expected[pid] = "succeeded"
        # More than carol will have, however often the example ran: insufficient funds.
        too_much = before["carol"] + Decimal("100.00")
        if pid := await bot.pay("carol", "bob", too_much, in_s=2):
            expected[pid] = "failed"
        # Changed their mind: cancelled before it is due, so it never runs.
        later = await bot.pay("bob", "alice", "1.00", in_s=60)
        if later is not None:
            await ps.cancel(later)
            bot.say("bob", f"payment {later} cancelled")
            expected[later] = "cancelled"

        await ps.start()  # scheduler + workers, in this event loop
        try:
            details = await asyncio.wait_for(
                asyncio.gather(*(ps.wait_for(pid, timeout=DEADLINE_S) for pid in expected)),
                DEADLINE_S,
            )
        except TimeoutError:
            print("not every payment finished within 30 s", file=sys.stderr)
            return 1
        finally:
            stop_progress()
            await ps.stop()  # graceful: the async callbacks of the last events finish first

        statuses = {d.payment.id: d.status for d in details}
        after = {u: paysched.to_decimal((await ps.get_account(u)).balance, "USD") for u in before}
        moved = {user: Decimal("0.00") for user in before}
        for d in details:
            if d.status == "succeeded":
                moved[d.payment.payer] -= d.amount
                moved[d.payment.payee] += d.amount
        counts = {s: list(statuses.values()).count(s) for s in ("succeeded", "failed", "cancelled")}
        unfinished = sum(1 for d in details if not d.final)
        print(f"\n{len(details)} payments: {counts['succeeded']} succeeded, {counts['failed']} "
              f"failed, {counts['cancelled']} cancelled, {unfinished} unfinished")  # fmt: skip
        for user in before:
            print(f"  {user}: {before[user]} -> {after[user]} USD")
        problems = [f"payment {pid}: {statuses[pid]}, expected {want}"
                    for pid, want in expected.items() if statuses[pid] != want]  # fmt: skip
        problems += [f"{user}: balance moved by {after[user] - before[user]}, expected "
                     f"{moved[user]}" for user in before
                     if after[user] - before[user] != moved[user]]  # fmt: skip
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        print("all payments final, balances moved exactly once" if not problems else "FAILED")
        return 1 if problems or unfinished else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
