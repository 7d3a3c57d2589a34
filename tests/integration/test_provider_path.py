"""Payments through the HTTP provider executor against the stand-in provider, end to end:
scheduler, queue, workers, resolver. Unknown outcomes are resolved by asking the provider,
never guessed; each succeeded occurrence is charged exactly once under its own key."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paysched.actors import Actor
from paysched.app import App
from paysched.clock import ManualClock
from paysched.config import Settings
from paysched.db.store import Claim, Finish
from paysched.db.store.execution import Execution
from paysched.domain import Occurrence, OccurrenceState
from paysched.errors import Conflict, DatabaseUnavailable
from paysched.executors.claims import order_of
from paysched.standin.server import StandinProvider
from tests.conftest import wait_for
from tests.integration.helpers import all_final, fund, pay, running

S = OccurrenceState
MS = timedelta(milliseconds=1)
MODES = [
    "none",
    "decline",
    "timeout_before",
    "timeout_after",
    "error_after",
    "drop_after",
    "pending",
    "slow",
]


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[StandinProvider]:
    with StandinProvider(
        tmp_path / "provider.db", token="s3cret-token", hang_s=1.5, slow_s=0.1, settle_s=0.5
    ) as instance:
        yield instance


def http_settings(settings: Settings, provider: StandinProvider, **extra: object) -> Settings:
    return settings.with_overrides(
        executor="http",
        provider_url=provider.url,
        provider_token="s3cret-token",
        provider_timeout=timedelta(seconds=0.5),
        provider_connect_timeout=timedelta(seconds=1),
        **extra,
    )


async def test_every_provider_fault_ends_in_the_truth(
    settings: Settings, provider: StandinProvider
) -> None:
    app = await App.open(http_settings(settings, provider))
    try:
        await fund(app, {"alice": 0, "bob": 0})  # the provider holds the money, not the ledger
        pids = {
            mode: await pay(app, "alice", "bob", 100 + i, in_s=1.5) for i, mode in enumerate(MODES)
        }
        keys = {
            mode: (await app.db(app.store.reads.occurrences_of, pid))[0].key
            for mode, pid in pids.items()
        }
        provider.set_faults({"keys": {keys[m]: m for m in MODES if m != "none"}})
        async with running(app):
            occs = {o.payment_id: o for o in await all_final(app, list(pids.values()), 60)}
        charges = {c.key: c for c in provider.charges()}
        for mode, pid in pids.items():
            occ = occs[pid]
            charge = charges.get(keys[mode])
            assert charge is not None, mode
            expected = S.FAILED if charge.status == "declined" else S.SUCCEEDED
            assert occ.state == expected, (mode, occ)
            if occ.state == S.SUCCEEDED:
                assert occ.reference == charge.id  # the provider's id, shown by `show`
        assert occs[pids["decline"]].state == S.FAILED
        for mode in ("timeout_before", "timeout_after", "error_after", "drop_after", "pending"):
            history = await app.db(app.store.reads.transitions_of, [occs[pids[mode]].id])
            assert S.UNKNOWN in {h.to_state for h in history}, mode  # asked, never guessed
        retried = await app.db(app.store.reads.transitions_of, [occs[pids["timeout_before"]].id])
        assert (S.UNKNOWN, S.QUEUED) in {(h.from_state, h.to_state) for h in retried}
        # Exactly once: one charge per key, and no charge for a key paysched does not know.
        assert sorted(charges) == sorted(keys.values())
        assert len(provider.charges()) == len(MODES)
    finally:
        await app.close()


async def test_still_unknown_after_the_window_needs_a_person(
    settings: Settings, provider: StandinProvider
) -> None:
    app = await App.open(http_settings(settings, provider, resolve_window=timedelta(seconds=1)))
    try:
        await fund(app, {"alice": 0, "bob": 0})
        pid = await pay(app, "alice", "bob", 4_200, in_s=1.0)
        (occ,) = await app.db(app.store.reads.occurrences_of, pid)
        provider.set_faults({"keys": {occ.key: "timeout_after"}, "lookup_error": 1.0})

        async def needs_review() -> bool:
            return (await app.db(app.store.reads.get_occurrence, occ.id)).state == S.NEEDS_REVIEW

        async with running(app):
            await wait_for(needs_review, 60, "the occurrence to need review")
        assert (await app.db(app.store.reads.occurrence_counts))["needs_review"] == 1
        assert app.outbox is not None
        events = [n.event for n in await app.db(app.outbox.list, None, pid, 100)]
        assert "needs_review" in events
        # The person checks with the provider (it did charge) and settles it by hand.
        assert (
            await app.resolve_occurrence(occ.key, "succeeded", "charge seen", actor=Actor.python())
            == S.SUCCEEDED
        )
        done = await app.db(app.store.reads.get_occurrence, occ.id)
        assert done.state == S.SUCCEEDED
        history = await app.db(app.store.reads.transitions_of, [occ.id])
        assert history[-1].reason == "resolved by hand: charge seen"
        assert len(provider.charges()) == 1
    finally:
        await app.close()


async def test_the_users_own_executor_from_examples(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PAYSCHED_EXECUTOR=module:factory, as README shows with examples/custom_executor.py."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "examples"))
    app = await App.open(settings.with_overrides(executor="custom_executor:make_executor"))
    try:
        assert app.executor is not None and app.executor.name == "bank-transfer"
        await fund(app, {"alice": 0, "bob": 0})
        ok = await pay(app, "alice", "bob", 2_500)
        too_big = await pay(app, "alice", "bob", 2_000_000)
        async with running(app):
            occs = {o.payment_id: o for o in await all_final(app, [ok, too_big], 30)}
        assert occs[ok].state == S.SUCCEEDED and occs[ok].reference == "bt-1"
        assert occs[too_big].state == S.FAILED and "daily limit" in (occs[too_big].reason or "")
    finally:
        await app.close()


class FailsToResolve:
    """The real store's execution part, except that recording the outcome of one occurrence
    fails as a lock timeout or a dropped connection would."""

    def __init__(self, execution: Execution, occurrence_id: int) -> None:
        self._execution = execution
        self._occurrence_id = occurrence_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._execution, name)

    def resolve(self, claim: Claim, *args: Any) -> bool:
        if claim.occurrence.id == self._occurrence_id:
            raise DatabaseUnavailable("database unavailable: lock timeout")
        return self._execution.resolve(claim, *args)


async def test_a_failed_check_holds_its_occurrence_for_seconds_not_the_others(
    settings: Settings, provider: StandinProvider
) -> None:
    """One check failing on paysched's own database neither stops the other checks of the pass
    nor parks its occurrence for minutes: it is leased for about one lookup's time."""
    app = await App.open(http_settings(settings, provider))
    try:
        await fund(app, {"alice": 0, "bob": 0})
        pids = [await pay(app, "alice", "bob", 100 + i) for i in range(3)]
        now = app.clock.now()
        await app.db(app.store.payments.materialize_due, now, now)
        assert app.executor is not None and app.resolver is not None
        ids = []
        for i, pid in enumerate(pids):
            (occ,) = await app.db(app.store.reads.occurrences_of, pid)
            claim = await app.db(app.store.execution.claim, occ.id, now)
            assert isinstance(claim, Claim)
            # The provider charged it; its answer was lost on the way back.
            assert (await app.executor.execute(order_of(claim))).outcome == "succeeded"
            unknown = Finish(claim, S.UNKNOWN, "answer lost", resolve_at=now + i * MS)
            assert await app.db(app.store.execution.finish_many, [unknown], now) == [True]
            ids.append(occ.id)
        failing = copy.copy(app.store)  # the same parts, but for its execution
        failing.execution = FailsToResolve(app.store.execution, ids[0])  # type: ignore[assignment]
        app.resolver.store = failing
        assert await app.resolver.check_due() == 3
        states = [(await app.db(app.store.reads.get_occurrence, i)).state for i in ids]
        assert states == [S.UNKNOWN, S.SUCCEEDED, S.SUCCEEDED]
        held = await app.db(app.store.reads.get_occurrence, ids[0])
        assert held.resolve_at is not None
        # Leased for one lookup (2 x (1 s connect + 0.5 s read)) and a margin: seconds.
        assert held.resolve_at - now <= app.resolver.lease + timedelta(seconds=1)
        assert app.resolver.lease < timedelta(seconds=15)
    finally:
        await app.close()


async def charged_then_unreachable(
    app: App, provider: StandinProvider, amount: int
) -> tuple[Occurrence, Claim, int]:
    """A payment due now whose job is in the queue; a first worker claimed it, the provider
    charged it, and that worker died or stalled with no answer kept; then the provider went
    away. Returns the occurrence, the first worker's claim and the provider's port."""
    await fund(app, {"alice": 0, "bob": 0})
    pid = await pay(app, "alice", "bob", amount)
    assert app.scheduler is not None and app.executor is not None
    await app.scheduler.tick()  # the job is in the queue
    (occ,) = await app.db(app.store.reads.occurrences_of, pid)
    first = await app.db(app.store.execution.claim, occ.id, app.clock.now(), occ.key)
    assert isinstance(first, Claim)
    assert (await app.executor.execute(order_of(first))).outcome == "succeeded"
    port = int(provider.url.rsplit(":", 1)[1])
    provider.stop()
    return occ, first, port


async def test_an_unreachable_last_attempt_asks_before_failing(
    settings: Settings, provider: StandinProvider, tmp_path: Path
) -> None:
    """Found by the chaos run: a worker sent the charge and died before recording it; the
    takeover, on the last attempt, could not reach the provider ("not attempted"), and the
    occurrence ended failed although the provider had charged it. Now the resolver asks the
    provider first, and the truth (succeeded) is recorded."""
    app = await App.open(http_settings(settings, provider, attempts=1))
    try:
        occ, _, port = await charged_then_unreachable(app, provider, 777)

        async def state() -> S:
            return (await app.db(app.store.reads.get_occurrence, occ.id)).state

        async with running(app, scheduler=False):
            await wait_for(lambda: _is(state, S.UNKNOWN), 30, "the takeover to ask, not fail")
            history = await app.db(app.store.reads.transitions_of, [occ.id])
            assert history[-1].reason is not None and "unreachable" in history[-1].reason
            back = StandinProvider(tmp_path / "provider.db", token="s3cret-token", port=port)
            back.start()
            try:
                await wait_for(lambda: _is(state, S.SUCCEEDED), 30, "the resolver's answer")
            finally:
                back.stop()
        assert await state() == S.SUCCEEDED
    finally:
        await app.close()


async def test_a_cancel_after_an_unreachable_takeover_asks_the_provider_first(
    settings: Settings, provider: StandinProvider, tmp_path: Path
) -> None:
    """Issue 19, finding 1: worker A sends the charge and stalls; worker B takes the attempt
    over and cannot connect ("not attempted"). Left `retrying` (cancellable), a cancel buried
    the charge the provider had made. Now B's outcome is unknown: the provider is asked first,
    a cancel meanwhile answers so and changes nothing, and the charge is recorded."""
    # A long backoff: a `retrying` occurrence (the bug) would stay so while the test cancels.
    app = await App.open(http_settings(settings, provider, backoff_ms=600_000))
    try:
        occ, first, port = await charged_then_unreachable(app, provider, 1_234)
        pid = occ.payment_id

        async def taken_over_and_answered() -> bool:
            now = await app.db(app.store.reads.get_occurrence, occ.id)
            return now.fence > first.fence and now.state != S.EXECUTING

        async with running(app, scheduler=False):
            await wait_for(taken_over_and_answered, 30, "the takeover's attempt to end")
            assert (await app.db(app.store.reads.get_occurrence, occ.id)).state == S.UNKNOWN
            with pytest.raises(Conflict, match="asking the provider first"):
                await app.cancel_payment(pid, actor=Actor.python())
            back = StandinProvider(tmp_path / "provider.db", token="s3cret-token", port=port)
            back.start()
            try:
                await wait_for(lambda: _is(state_of(app, occ.id), S.SUCCEEDED), 30, "the answer")
            finally:
                back.stop()
        assert (await app.db(app.store.payments.get_payment, pid)).state.value != "cancelled"
        history = await app.db(app.store.reads.transitions_of, [occ.id])
        assert S.CANCELLED not in {h.to_state for h in history}
    finally:
        await app.close()


def state_of(app: App, occurrence_id: int) -> Any:
    async def state() -> S:
        return (await app.db(app.store.reads.get_occurrence, occurrence_id)).state

    return state


async def _is(state: Any, expected: S) -> bool:
    return bool(await state() == expected)


async def test_a_404_while_the_request_may_be_in_flight_is_asked_again(
    settings: Settings, tmp_path: Path
) -> None:
    """A provider that records a charge only when it commits answers 404 for one still in
    flight. paysched took that for "never received": on the last attempt the occurrence failed
    while its charge went through (and earlier it was sent again). The 404 is believed only
    once the request's own timeout (2 x (1 s connect + 0.5 s read) here) has passed since it
    was sent; asked again then, the provider has the charge."""
    clock = ManualClock(datetime.now(UTC))
    # The charge is held in flight at the provider for 4 s, well past paysched's 0.5 s.
    with StandinProvider(
        tmp_path / "provider.db", token="s3cret-token", slow_s=4.0, in_flight_lookup=404
    ) as provider:
        app = await App.open(http_settings(settings, provider, attempts=1), clock=clock)
        try:
            assert app.executor is not None and app.resolver is not None
            await fund(app, {"alice": 0, "bob": 0})
            pid = await pay(app, "alice", "bob", 555)
            (occ,) = await app.db(app.store.reads.occurrences_of, pid)
            provider.set_faults({"keys": {occ.key: "slow"}})
            sent_at = clock.now()
            claim = await app.db(app.store.execution.claim, occ.id, sent_at, occ.key)
            assert isinstance(claim, Claim)
            sent = await app.executor.execute(order_of(claim))
            assert sent.outcome == "unknown" and occ.key in provider.in_flight()
            unknown = Finish(claim, S.UNKNOWN, sent.reason, resolve_at=clock.now())
            assert await app.db(app.store.execution.finish_many, [unknown], clock.now()) == [True]

            clock.advance(timedelta(seconds=2.5))  # the request may be in flight until 3 s
            assert await app.resolver.check_due() == 1
            assert occ.key in provider.in_flight()  # the 404 it got was about this one
            held = await app.db(app.store.reads.get_occurrence, occ.id)
            assert held.state == S.UNKNOWN, held.reason
            assert "may still be in flight" in (held.reason or "")
            # Asked again once nothing can be in flight any more, not before.
            assert app.resolver.in_flight == timedelta(seconds=3)
            assert held.resolve_at is not None and held.resolve_at >= sent_at + timedelta(seconds=3)
            await wait_for(lambda: _charged(provider, occ.key), 30, "the held charge to commit")

            clock.advance(timedelta(seconds=10))
            assert await app.resolver.check_due() == 1
            (done,) = await app.db(app.store.reads.occurrences_of, pid)
            (charge,) = provider.charges()
            assert done.state == S.SUCCEEDED and done.reference == charge.id
        finally:
            await app.close()


async def _charged(provider: StandinProvider, key: str) -> bool:
    return any(c.key == key for c in provider.charges())
