from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from paysched.backoff import Backoff
from paysched.config import Settings
from paysched.queue import not_before_ms, priority_for

# The seed's retry delays: 2 s, 4 s, 8 s (and on), each spread by +-20 %, in milliseconds,
# written out rather than computed (a copy of the formula would agree with any bug in it).
SEED_DELAYS = [(1, 1600, 2400), (2, 3200, 4800), (3, 6400, 9600), (4, 12800, 19200)]


@pytest.mark.parametrize(("attempt", "low", "high"), SEED_DELAYS)
def test_backoff_stays_within_jitter_bounds(
    attempt: int, low: int, high: int, tmp_path: Path
) -> None:
    # The defaults are the seed's: PAYSCHED_BACKOFF_MS and PAYSCHED_BACKOFF_JITTER unset.
    settings = Settings.from_env({"PAYSCHED_DATA_DIR": str(tmp_path)})
    backoff = Backoff(settings.backoff_ms, settings.backoff_jitter, random.Random(attempt))
    delays = [backoff.delay_ms(attempt) for _ in range(2000)]
    assert low <= min(delays) and max(delays) <= high
    # Spread over the range, not bunched at one end: jitter really spreads retries.
    assert min(delays) < low + (high - low) // 10 and max(delays) > high - (high - low) // 10
    assert len(set(delays)) > 100
    # The bounds it tells (the chaos harness checks retries against them) hold every delay
    # and are the seed's range, give or take the 1 ms of rounding.
    bound_low, bound_high = backoff.bounds_ms(attempt)
    assert bound_low <= min(delays) and max(delays) <= bound_high
    assert low - 1 <= bound_low and bound_high <= high + 1


def test_backoff_without_jitter_is_exact() -> None:
    backoff = Backoff(2000, 0.0, random.Random(1))
    assert [backoff.delay_ms(n) for n in (1, 2, 3)] == [2000, 4000, 8000]


def test_earlier_due_gets_higher_priority() -> None:
    base = datetime(2026, 11, 28, 9, tzinfo=UTC)
    ranks = [priority_for(base + timedelta(minutes=m)) for m in range(0, 600, 7)]
    assert ranks == sorted(ranks)
    assert all(1 <= r < 2**21 for r in ranks)


def test_jobs_never_become_due_before_their_due_time() -> None:
    """Regression (found by python -m paysched.chaos): a job's time was the due time truncated
    to the millisecond, and BullMQ promotes a delayed job when round(time.time() * 1000)
    reaches it; a payment due at .706417 s started at .706326 s, 91 microseconds early."""
    rng = random.Random(7)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        due = datetime(2026, 11, 28, 4, 38, tzinfo=UTC) + timedelta(
            microseconds=rng.randrange(3_600_000_000)
        )
        due_us = (due - epoch) // timedelta(microseconds=1)
        job_ms = not_before_ms(due)
        earliest_promotion_us = job_ms * 1000 - 500  # round(t_ms) >= job_ms from here on
        assert earliest_promotion_us >= due_us
        assert job_ms * 1000 - due_us <= 2000  # and never more than 2 ms late
    exact = datetime(2026, 11, 28, 4, 38, 21, 706000, tzinfo=UTC)
    assert not_before_ms(exact) == (exact - epoch) // timedelta(milliseconds=1) + 1
