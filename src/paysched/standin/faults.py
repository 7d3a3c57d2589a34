"""Fault modes of the stand-in provider, and which one hits each request.

POST /payments modes:

- ``decline``: commit the charge as declined, answer it;
- ``timeout_before``: sleep ``hang_s`` (past the client's timeout), then do NOT commit: the
  charge never exists (a late client still gets a 503);
- ``timeout_after``: commit, then sleep ``hang_s`` before answering;
- ``error_after``: commit, then answer 500;
- ``drop_after``: commit, then close the connection without any response;
- ``pending``: commit as pending; it settles ``settle_s`` later to succeeded, or to declined
  with probability ``decline`` (drawn at commit time);
- ``slow``: sleep ``slow_s`` (shorter than the client's timeout), then go on normally.

GET /payments/{key} mode: ``lookup_error`` answers 503.

Per-key overrides come first and are one-shot: ``{"keys": {"k": "timeout_before"}}`` makes the
next POST for ``k`` time out; a list (``["drop_after", "slow"]``) hits the next POSTs in order;
``lookup_error`` entries hit the next GETs instead. Otherwise the mode is drawn from
``random.Random(f"{seed}:{key}:{n}")``, n counting the POSTs already seen for that key (GETs
draw from ``f"{seed}:{key}:get:{n}"``), so a run with a seed is reproducible whatever the
interleaving of keys.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    NONE = "none"
    DECLINE = "decline"
    TIMEOUT_BEFORE = "timeout_before"
    TIMEOUT_AFTER = "timeout_after"
    ERROR_AFTER = "error_after"
    DROP_AFTER = "drop_after"
    PENDING = "pending"
    SLOW = "slow"
    LOOKUP_ERROR = "lookup_error"


# The order of the cumulative draw; changing it changes every seeded run.
POST_MODES: tuple[Mode, ...] = (
    Mode.DECLINE,
    Mode.TIMEOUT_BEFORE,
    Mode.TIMEOUT_AFTER,
    Mode.ERROR_AFTER,
    Mode.DROP_AFTER,
    Mode.PENDING,
    Mode.SLOW,
)
# Modes that only disturb the delivery of an answer; they also hit a replay of a committed key
# (the replay answers the stored charge, so they can never cause a second charge).
DELIVERY_MODES: frozenset[Mode] = frozenset(
    {Mode.TIMEOUT_BEFORE, Mode.TIMEOUT_AFTER, Mode.ERROR_AFTER, Mode.DROP_AFTER, Mode.SLOW}
)
DURATIONS = ("hang_s", "slow_s", "settle_s")


@dataclass(frozen=True, slots=True)
class Draw:
    mode: Mode
    settle_to: str  # what a pending charge becomes: "succeeded" or "declined"


def parse_rates(text: str) -> dict[str, float]:
    """'decline=0.05,timeout_before=0.02' -> {"decline": 0.05, ...}; ValueError if bad."""
    rates: dict[Mode, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"rates: expected mode=rate, got {part!r}")
        rates[_mode(name.strip())] = _rate(name.strip(), value.strip())
    _check_total(rates)
    return {mode.value: rate for mode, rate in rates.items()}


class Faults:
    """The fault configuration of one provider; thread-safe (handlers run in threads)."""

    def __init__(
        self,
        seed: int | str = 0,
        rates: Mapping[str, float] | None = None,
        *,
        hang_s: float = 3.0,
        slow_s: float = 0.3,
        settle_s: float = 2.0,
    ) -> None:
        self._lock = threading.Lock()
        self.seed = str(seed)
        self.rates: dict[Mode, float] = {}
        self.hang_s = hang_s
        self.slow_s = slow_s
        self.settle_s = settle_s
        self._overrides: dict[str, list[Mode]] = {}
        self._posts: Counter[str] = Counter()
        self._gets: Counter[str] = Counter()
        self._drawn: Counter[Mode] = Counter()  # what hit the requests so far (a report)
        if rates:
            self.update({"rates": dict(rates)})

    def update(self, spec: Mapping[str, Any]) -> None:
        """Apply a /_faults body; ValueError (naming the field) leaves everything unchanged.

        ``{"decline": 0.1, ...}`` or ``{"rates": {...}}`` set rates (0 removes one; others are
        kept); ``{"keys": {key: mode | [modes]}}`` queues one-shot overrides; ``hang_s``,
        ``slow_s``, ``settle_s`` set durations; ``seed`` reseeds; ``{"clear": true}`` first
        removes every rate and override.
        """
        rates: dict[Mode, float] = {}
        overrides: dict[str, list[Mode]] = {}
        durations: dict[str, float] = {}
        for field, value in spec.items():
            if field == "rates":
                if not isinstance(value, dict):
                    raise ValueError("rates: expected an object of mode -> rate")
                for name, rate in value.items():
                    rates[_mode(name)] = _rate(name, rate)
            elif field == "keys":
                if not isinstance(value, dict):
                    raise ValueError("keys: expected an object of key -> mode or list of modes")
                for key, modes in value.items():
                    names = modes if isinstance(modes, list) else [modes]
                    overrides[str(key)] = [_mode(str(m)) for m in names]
            elif field in DURATIONS:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{field}: expected a number of seconds >= 0")
                durations[field] = float(value)
            elif field in ("clear", "seed"):
                continue
            else:
                rates[_mode(field)] = _rate(field, value)
        with self._lock:
            merged = {} if spec.get("clear") else dict(self.rates)
            merged.update(rates)
            merged = {mode: rate for mode, rate in merged.items() if rate > 0}
            _check_total(merged)
            self.rates = merged
            if spec.get("clear"):
                self._overrides.clear()
            for key, modes in overrides.items():
                self._overrides.setdefault(key, []).extend(modes)
            for field, seconds in durations.items():
                setattr(self, field, seconds)
            if "seed" in spec:
                self.seed = str(spec["seed"])

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self.seed,
                "rates": {str(m): r for m, r in self.rates.items()},
                "keys": {k: [str(m) for m in v] for k, v in self._overrides.items() if v},
                "hang_s": self.hang_s,
                "slow_s": self.slow_s,
                "settle_s": self.settle_s,
                "drawn": {str(m): n for m, n in sorted(self._drawn.items())},
            }

    def for_post(self, key: str) -> Draw:
        """The mode for the next POST of `key` (counts it)."""
        with self._lock:
            n = self._posts[key]
            self._posts[key] += 1
            override = self._take(key, lambda m: m is not Mode.LOOKUP_ERROR)
            if override is not None:
                # An override is a test asking for exactly this: a pending one settles well.
                self._drawn[override] += 1
                return Draw(override, "succeeded")
            # A generator per (key, attempt): draws do not depend on how keys interleave.
            rng = random.Random(f"{self.seed}:{key}:{n}")
            mode = _pick(rng.random(), self.rates, POST_MODES)
            declined_later = rng.random() < self.rates.get(Mode.DECLINE, 0.0)
            self._drawn[mode] += 1
            return Draw(mode, "declined" if declined_later else "succeeded")

    def for_get(self, key: str) -> bool:
        """Whether the next GET of `key` fails with 503 (counts it)."""
        with self._lock:
            n = self._gets[key]
            self._gets[key] += 1
            failed = self._take(key, lambda m: m is Mode.LOOKUP_ERROR) is not None
            if not failed:
                rng = random.Random(f"{self.seed}:{key}:get:{n}")
                failed = rng.random() < self.rates.get(Mode.LOOKUP_ERROR, 0.0)
            if failed:
                self._drawn[Mode.LOOKUP_ERROR] += 1
            return failed

    def _take(self, key: str, wanted: Callable[[Mode], bool]) -> Mode | None:
        queue = self._overrides.get(key)
        if not queue:
            return None
        for i, mode in enumerate(queue):
            if wanted(mode):
                del queue[i]
                return mode
        return None


def _pick(x: float, rates: Mapping[Mode, float], order: tuple[Mode, ...]) -> Mode:
    total = 0.0
    for mode in order:
        total += rates.get(mode, 0.0)
        if x < total:
            return mode
    return Mode.NONE


def _mode(name: str) -> Mode:
    try:
        mode = Mode(name)
    except ValueError:
        known = ", ".join(m.value for m in Mode if m is not Mode.NONE)
        raise ValueError(f"{name}: unknown fault mode (known: {known})") from None
    return mode


def _rate(name: str, value: Any) -> float:
    # Rates are probabilities, not money: float is right here.
    if name == Mode.NONE:
        raise ValueError("none: has no rate (it is whatever the other rates leave)")
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a rate between 0 and 1, got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name}: expected a rate between 0 and 1, got {value!r}")
    return rate


def _check_total(rates: Mapping[Mode, float]) -> None:
    total = sum(rate for mode, rate in rates.items() if mode in POST_MODES)
    if total > 1.0 + 1e-9:
        raise ValueError(f"rates: the POST modes add up to {total:g}, more than 1")
