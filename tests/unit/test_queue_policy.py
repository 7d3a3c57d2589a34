from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from paysched.queue import Backoff, priority_for


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_backoff_stays_within_jitter_bounds(attempt: int) -> None:
    backoff = Backoff(2000, 0.2, random.Random(attempt))
    nominal = 2000 * 2 ** (attempt - 1)  # 2 s, 4 s, 8 s, 16 s
    delays = [backoff.delay_ms(attempt) for _ in range(2000)]
    assert min(delays) >= nominal * 0.8
    assert max(delays) <= nominal * 1.2 + 1
    assert backoff.bounds_ms(attempt) == (int(nominal * 0.8), round(nominal * 1.2) + 1)
    assert len(set(delays)) > 100  # jitter really spreads retries


def test_backoff_without_jitter_is_exact() -> None:
    backoff = Backoff(2000, 0.0, random.Random(1))
    assert [backoff.delay_ms(n) for n in (1, 2, 3)] == [2000, 4000, 8000]


def test_earlier_due_gets_higher_priority() -> None:
    base = datetime(2026, 11, 28, 9, tzinfo=UTC)
    ranks = [priority_for(base + timedelta(minutes=m)) for m in range(0, 600, 7)]
    assert ranks == sorted(ranks)
    assert all(1 <= r < 2**21 for r in ranks)
