"""The fault schedule, drawn from `random.Random(seed)`, and the code that injects each fault.

Faults run one after another (a database outage lasts its few seconds before the next fault
starts); killed processes come back after a drawn down time through `Processes.supervise`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paysched.app import App
from paysched.chaos.cancels import Canceller
from paysched.chaos.pauses import Pauser
from paysched.chaos.procs import Processes
from paysched.chaos.provider import ChaosProvider
from paysched.chaos.servers import PostgresCluster, RedisServer
from paysched.config import Settings

# kind -> relative weight of the extra faults after one of each kind
WEIGHTS = {
    "kill_worker": 6,
    "kill_scheduler": 3,
    "redis_restart": 2,
    "redis_flushall": 2,
    "redis_client_kill": 2,
    "db_outage": 2,
    "pg_terminate": 2,
    "double_tick": 2,
    "cancel": 4,  # a person cancelling a payment, racing its materialize or its claim
    "provider_kill": 2,  # the stand-in provider SIGKILLed mid-request, back after a while
    "pause": 3,  # a person pausing a recurring payment for a few seconds, then resuming it
}


def kinds(database: str, executor: str) -> list[str]:
    """The fault kinds a run on this database with this executor injects."""
    skip = set()
    if database != "postgresql":
        skip.add("pg_terminate")
    if executor != "provider":
        skip.add("provider_kill")
    return [k for k in WEIGHTS if k not in skip]


@dataclass(frozen=True)
class PlannedFault:
    at: float  # seconds after the fault phase starts
    kind: str
    down_s: float  # restart delay / outage length
    pick: int  # which process, modulo how many there are


@dataclass
class InjectedFault:
    kind: str
    started: float  # wall clock (time.time())
    ended: float
    detail: dict[str, Any] = field(default_factory=dict)


def plan(
    seed: int, duration: float, database: str, executor: str = "ledger", mean_gap_s: float = 3.0
) -> list[PlannedFault]:
    """One of every kind at a random moment, then more at random until the phase is full."""
    rng = random.Random(seed)
    chosen = kinds(database, executor)
    end = max(duration - 3.0, 2.0)  # leave the last seconds quiet for the last deadlines

    def down(kind: str) -> float:
        if kind in ("kill_worker", "kill_scheduler", "provider_kill"):
            return round(rng.uniform(0.2, 3.0), 2)
        if kind == "redis_restart":
            return round(rng.uniform(0.5, 3.0), 2)
        if kind == "db_outage":
            return round(rng.uniform(1.5, 5.0), 2)
        if kind == "pause":  # how long it is held: longer than late_after (1 s) or not
            return round(rng.uniform(1.0, 4.0), 2)
        return 0.0

    faults = [PlannedFault(rng.uniform(1.0, end), k, down(k), rng.randrange(1000)) for k in chosen]
    extra = int(duration / mean_gap_s)
    weights = [WEIGHTS[k] for k in chosen]
    for _ in range(extra):
        kind = rng.choices(chosen, weights)[0]
        faults.append(PlannedFault(rng.uniform(1.0, end), kind, down(kind), rng.randrange(1000)))
    return sorted(faults, key=lambda f: f.at)


class Injector:
    def __init__(
        self,
        procs: Processes,
        redis: RedisServer,
        pg: PostgresCluster | None,
        sqlite_path: Path | None,
        env: dict[str, str],
        sleep: Callable[[float], None],
        canceller: Canceller,
        provider: ChaosProvider | None = None,
        pauser: Pauser | None = None,
    ) -> None:
        self.canceller = canceller
        self.pauser = pauser
        self.provider = provider
        self.procs = procs
        self.redis = redis
        self.pg = pg
        self.sqlite_path = sqlite_path
        self.env = env
        self.sleep = sleep  # sleeps while keeping the processes supervised

    def inject(self, fault: PlannedFault) -> InjectedFault:
        started = time.time()
        detail = getattr(self, fault.kind)(fault)
        return InjectedFault(fault.kind, started, time.time(), detail or {})

    def _victim(self, role: str, fault: PlannedFault) -> str:
        names = self.procs.names(role)
        return names[fault.pick % len(names)]

    def kill_worker(self, fault: PlannedFault) -> dict[str, Any]:
        name = self._victim("worker", fault)
        return {"process": name, "killed": self.procs.sigkill(name, fault.down_s)}

    def kill_scheduler(self, fault: PlannedFault) -> dict[str, Any]:
        name = self._victim("scheduler", fault)
        return {"process": name, "killed": self.procs.sigkill(name, fault.down_s)}

    def cancel(self, fault: PlannedFault) -> dict[str, Any]:
        return self.canceller.cancel(fault.pick)

    def pause(self, fault: PlannedFault) -> dict[str, Any]:
        if self.pauser is None:
            raise RuntimeError("no pauser: this run pauses nothing")
        return self.pauser.pause(fault.down_s)

    def provider_kill(self, fault: PlannedFault) -> dict[str, Any]:
        assert self.provider is not None
        self.provider.collect_drawn()  # a restarted provider starts counting afresh
        return {"killed": self.procs.sigkill("provider-1", fault.down_s), "down_s": fault.down_s}

    def redis_restart(self, fault: PlannedFault) -> dict[str, Any]:
        self.redis.kill()
        self.sleep(fault.down_s)
        self.redis.start()  # replays the AOF
        return {"down_s": fault.down_s}

    def redis_flushall(self, fault: PlannedFault) -> dict[str, Any]:
        self.redis.flushall()
        return {}

    def redis_client_kill(self, fault: PlannedFault) -> dict[str, Any]:
        return {"clients": self.redis.kill_clients()}

    def pg_terminate(self, fault: PlannedFault) -> dict[str, Any]:
        assert self.pg is not None
        return {"backends": self.pg.terminate_backends()}

    def db_outage(self, fault: PlannedFault) -> dict[str, Any]:
        if self.pg is not None:
            self.pg.stop("fast")
            try:
                self.sleep(fault.down_s)
            finally:
                self.pg.start()
            return {"how": "pg_ctl stop -m fast / start", "down_s": fault.down_s}
        assert self.sqlite_path is not None
        conn = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            self.sleep(fault.down_s)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return {"how": "exclusive lock held", "down_s": fault.down_s}

    def double_tick(self, fault: PlannedFault) -> dict[str, Any]:
        """Two extra schedulers (separate connections and pools) tick at the same moment."""

        async def both() -> list[int]:
            settings = Settings.from_env(self.env)
            apps = [await App.open(settings) for _ in range(2)]
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*(a.scheduler.tick() for a in apps if a.scheduler)), 30
                )
                return [r.created + r.reconciled for r in results]
            finally:
                for a in apps:
                    with contextlib.suppress(Exception):
                        await a.close()

        return {"enqueued": asyncio.run(both())}
