"""Exponential backoff, the one formula every retry in paysched waits by.

`delay(base, n)` is base, 2*base, 4*base ... for the n-th wait (n = 1, 2, 3 ...), at most
`cap`, spread by `jitter` (x U(1 - jitter, 1 + jitter)) when given a random source:
- payment attempts (Backoff below: the seed's 2 s, 4 s, 8 s, +-20 %),
- notification sends (notify/delivery.py: 1 s doubling to 10 minutes, +-20 %),
- the resolver's checks of an unknown outcome (executors/resolver.py: 2 s doubling, capped),
- a service waiting for its database or Redis (app.until_available: 0.2 s doubling to 5 s),
- the scheduler's retry of a failed tick (scheduler.py: 4 s doubling to a minute).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Beyond this many doublings every use is long past its cap (2**64 ms is 585 million years);
# bounding the exponent keeps a float base from overflowing on an absurd count.
MAX_DOUBLINGS = 64


def delay(
    base: float,
    n: int,
    *,
    cap: float | None = None,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """The n-th wait (n >= 1; less counts as 1): base * 2**(n-1), at most `cap`, times
    U(1 - jitter, 1 + jitter) drawn from `rng` (none drawn when jitter is 0 or rng None).
    An int base without cap or jitter gives an exact int."""
    raw = base * (1 << min(max(n - 1, 0), MAX_DOUBLINGS))
    if cap is not None:
        raw = min(raw, cap)
    if not jitter or rng is None:
        return raw
    return raw * (1.0 + jitter * (2.0 * rng.random() - 1.0))


@dataclass(frozen=True, slots=True)
class Backoff:
    """A payment's retries (PAYSCHED_BACKOFF_MS, PAYSCHED_BACKOFF_JITTER): `delay` in whole
    milliseconds, at least 1."""

    base_ms: int
    jitter: float
    rng: random.Random

    def delay_ms(self, attempts_made: int) -> int:
        return max(1, round(delay(self.base_ms, attempts_made, jitter=self.jitter, rng=self.rng)))

    def bounds_ms(self, attempts_made: int) -> tuple[int, int]:
        """The least and the most delay_ms can be (tests check the retries they see by them)."""
        raw = delay(self.base_ms, attempts_made)
        return max(1, int(raw * (1 - self.jitter))), round(raw * (1 + self.jitter)) + 1
