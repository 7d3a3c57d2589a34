"""The stand-in payment provider in a chaos run: a real process on a fixed port (so it can be
SIGKILLed and come back where the workers look for it), and the harness's client to its ledger.

Its faults (declines, timeouts before and after committing, errors and dropped connections
after committing, pending charges that settle later, slow answers, failing lookups) are drawn
from the run's seed; `drawn` sums what hit the requests across its restarts.
"""

from __future__ import annotations

import secrets
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from paysched.chaos.model import ProviderView
from paysched.redis_server import free_port

# Per request. Their sum stays well under 1: most charges go through on the first try.
RATES = {
    "decline": 0.03,
    "timeout_before": 0.03,
    "timeout_after": 0.03,
    "error_after": 0.03,
    "drop_after": 0.03,
    "pending": 0.05,
    "slow": 0.05,
    "lookup_error": 0.15,
}
HANG_S = 2.0  # past the workers' read timeout (PROVIDER_TIMEOUT below)
PROVIDER_TIMEOUT = "1s"
SETTLE_S = 1.5


class ChaosProvider:
    def __init__(
        self,
        workdir: Path,
        seed: int,
        rates: dict[str, float] | None = None,
        slow_s: float | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.db = workdir / "standin.db"
        self.seed = seed
        self.rates = RATES if rates is None else rates
        self.slow_s = slow_s  # how long a `slow` answer takes (None: the stand-in's default)
        self.initial: dict[str, Decimal] = {}
        self._drawn: Counter[str] = Counter()
        self._client = httpx.Client(base_url=self.url, timeout=5.0)

    def command(self) -> list[str]:
        rates = ",".join(f"{mode}={rate}" for mode, rate in self.rates.items())
        return [
            sys.executable,
            "-m",
            "paysched.standin",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--seed",
            f"chaos-{self.seed}",
            "--rates",
            rates,
            "--hang-s",
            str(HANG_S),
            "--settle-s",
            str(SETTLE_S),
            *(["--slow-s", str(self.slow_s)] if self.slow_s is not None else []),
        ]

    def env(self) -> dict[str, str]:
        """For the stand-in (its token) and for the workers (where it is, how long to wait)."""
        return {
            "PAYSCHED_STANDIN_TOKEN": self.token,
            "PAYSCHED_EXECUTOR": "http",
            "PAYSCHED_PROVIDER_URL": self.url,
            "PAYSCHED_PROVIDER_TOKEN": self.token,
            "PAYSCHED_PROVIDER_CONNECT_TIMEOUT": "1s",
            "PAYSCHED_PROVIDER_TIMEOUT": PROVIDER_TIMEOUT,
            # Asked about unknown outcomes often enough to resolve within the run; far from the
            # window after which an unresolved one goes to a person.
            "PAYSCHED_RESOLVE_MAX_INTERVAL": "2s",
            "PAYSCHED_RESOLVE_WINDOW": "1h",
        }

    def up(self) -> bool:
        try:
            return self._client.get("/_faults").status_code == 200
        except httpx.HTTPError:
            return False

    def set_balance(self, name: str, balance: Decimal) -> None:
        response = self._client.post("/_accounts", json={"name": name, "balance": str(balance)})
        response.raise_for_status()
        self.initial[name] = balance

    def force(self, key: str, mode: str) -> None:
        """The next charge request for `key` meets `mode` rather than a drawn fault."""
        response = self._client.post("/_faults", json={"keys": {key: mode}})
        response.raise_for_status()

    def collect_drawn(self) -> None:
        """Add up the fault modes drawn so far; called before each kill (a restart forgets)."""
        try:
            drawn = self._client.get("/_faults").json().get("drawn", {})
        except (httpx.HTTPError, ValueError):
            return  # down already: this life's draws are lost to the report, not to the checks
        self._drawn.update(drawn)

    def view(self) -> ProviderView:
        """The provider's end state, for the invariants."""
        self.collect_drawn()
        charges: list[dict[str, Any]] = self._client.get("/_charges").json()
        balances: dict[str, Decimal | None] = {}
        for name in self.initial:
            raw = self._client.get(f"/_accounts/{name}").json()["balance"]
            balances[name] = None if raw is None else Decimal(raw)
        drawn = dict(sorted(self._drawn.items()))
        return ProviderView(charges, balances, dict(self.initial), drawn)

    def close(self) -> None:
        self._client.close()
