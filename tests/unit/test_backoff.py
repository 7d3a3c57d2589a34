"""paysched.backoff.delay: the one formula behind every retry's wait. The numbers each caller
relied on before they shared it are written out here, not computed (a copy of the formula
would agree with any bug in it)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from paysched.backoff import Backoff, delay
from paysched.clock import ManualClock
from paysched.executors.resolver import next_interval
from paysched.notify.delivery import Deliverer

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def test_doubles_from_the_base_for_the_first_wait() -> None:
    # A payment's retries without jitter: the seed's 2 s, 4 s, 8 s, exact integers.
    assert [delay(2000, n) for n in (1, 2, 3, 4)] == [2000, 4000, 8000, 16000]
    assert [Backoff(2000, 0.0, random.Random(1)).delay_ms(n) for n in (1, 2, 3)] == [
        2000,
        4000,
        8000,
    ]
    assert delay(2000, 0) == 2000  # no attempt made yet counts as the first


def test_stops_at_the_cap() -> None:
    # A service waiting for its database or Redis (app.until_available): 0.2 s up to 5 s.
    waits = [delay(0.2, n, cap=5.0) for n in range(1, 9)]
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    # The scheduler's retry of a failed tick: 4 s, 8 s ... at most a minute.
    assert [delay(4.0, n, cap=60.0) for n in (1, 2, 3, 4, 5, 6)] == [4, 8, 16, 32, 60, 60]
    # However many waits came before: no overflow, still the cap.
    assert delay(0.2, 10**6, cap=5.0) == 5.0


def test_jitter_spreads_within_its_bounds() -> None:
    rng = random.Random(7)
    waits = [delay(10.0, 2, cap=15.0, jitter=0.2, rng=rng) for _ in range(2000)]
    # Capped first, then spread: 15 s +-20 %.
    assert 12.0 <= min(waits) < 12.3 and 17.7 < max(waits) <= 18.0
    assert len(set(waits)) > 1000
    assert delay(10.0, 2, jitter=0.2) == 20.0  # no random source: no spread


def test_the_resolver_checks_at_2_4_8_seconds_up_to_its_maximum() -> None:
    most = timedelta(minutes=5)
    got = [next_interval(checks, most) for checks in range(10)]
    assert got[:4] == [timedelta(seconds=s) for s in (2, 4, 8, 16)]
    assert got[-1] == most and max(got) == most
    assert next_interval(10**6, most) == most


def test_a_notification_waits_1_s_doubling_to_10_minutes_spread_20_percent() -> None:
    with ThreadPoolExecutor(1) as pool:
        deliverer = Deliverer(
            cast(Any, None), cast(Any, None), ManualClock(NOW), pool, rng=random.Random(3)
        )
        for attempts, low, high in [(1, 0.8, 1.2), (2, 1.6, 2.4), (3, 3.2, 4.8), (40, 480, 720)]:
            waits = [deliverer.backoff_s(attempts) for _ in range(500)]
            assert low <= min(waits) < low * 1.05 and high * 0.95 < max(waits) <= high
