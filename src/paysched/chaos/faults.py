"""The fault schedule, drawn from `random.Random(seed)`, and the code that injects each fault.

Faults run one after another (a database outage lasts its few seconds before the next fault
starts); killed processes come back after a drawn down time through `Processes.supervise`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from paysched.app import App
from paysched.chaos.cancels import Canceller
from paysched.chaos.model import BROKE
from paysched.chaos.pauses import Pauser
from paysched.chaos.procs import Processes
from paysched.chaos.provider import ChaosProvider
from paysched.chaos.servers import (
    PostgresCluster,
    RedisServer,
    ReplicatedPostgres,
    SentinelRedis,
)
from paysched.chaos.skips import Skipper
from paysched.clock import to_ms
from paysched.config import Settings
from paysched.domain import Occurrence, OccurrenceState, occurrence_key

# kind -> relative weight of the extra faults after one of each kind
WEIGHTS = {
    "kill_worker": 6,  # with worker groups (--worker-processes): the group's parent
    "kill_worker_child": 4,  # one process of a worker group, which its supervisor restarts
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
    "skip": 3,  # a person skipping a recurring payment's next occurrence from the chat
    # A worker sends a charge and stalls, the provider goes down, another worker takes the
    # attempt over and cannot connect, then a person cancels the payment (issue 19 finding 1).
    "stall_takeover_cancel": 1,
    # --replicated: the Redis primary SIGKILLed and a replica promoted by the sentinels; the
    # PostgreSQL primary stopped and its synchronous standby promoted. Each old primary comes
    # back later as a replica / standby of the new one.
    "redis_failover": 2,
    "pg_switchover": 2,
}
PROVIDER_ONLY = {"provider_kill", "stall_takeover_cancel"}
GROUPS_ONLY = {"kill_worker_child"}
REPLICATED_ONLY = {"redis_failover", "pg_switchover"}
# Under Sentinel a restart of the primary is a failover (the sentinels act within a second):
# redis_failover is that fault, with the old primary coming back as a replica.
SINGLE_ONLY = {"redis_restart"}
# stall_takeover_cancel: how far ahead the payment it stages is due (time to mark it), how
# long each stage may take before the fault gives up and says so in its detail.
STAGE_LEAD = timedelta(seconds=1)
STAGE_TIMEOUT_S = 20.0

T = TypeVar("T")


def kinds(
    database: str,
    executor: str,
    only: Collection[str] = (),
    groups: bool = False,
    replicated: bool = False,
) -> list[str]:
    """The fault kinds a run on this database with this executor injects (of `only`, if
    given: a focused run); `groups`: its workers are groups of processes; `replicated`: Redis
    under Sentinel and PostgreSQL with a standby."""
    skip = set() if groups else set(GROUPS_ONLY)
    skip |= SINGLE_ONLY if replicated else REPLICATED_ONLY
    if database != "postgresql":
        skip |= {"pg_terminate", "pg_switchover"}
    if executor != "provider":
        skip |= PROVIDER_ONLY
    return [k for k in WEIGHTS if k not in skip and (not only or k in only)]


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
    seed: int,
    duration: float,
    database: str,
    executor: str = "ledger",
    mean_gap_s: float = 3.0,
    only: Collection[str] = (),
    groups: bool = False,
    replicated: bool = False,
) -> list[PlannedFault]:
    """One of every kind at a random moment, then more at random until the phase is full."""
    rng = random.Random(seed)
    chosen = kinds(database, executor, only, groups, replicated)
    if not chosen:
        raise ValueError(
            f"--faults: none of {sorted(only)} applies to a {database} run with executor {executor}"
        )
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
        if kind in ("redis_failover", "pg_switchover"):  # until the old primary is back
            return round(rng.uniform(1.0, 5.0), 2)
        return 0.0

    def first_at(kind: str) -> float:
        # The staged interleaving needs a one-time payment still to fall due: in the first
        # half, so that faults running late (outages waited out) cannot push it past the last.
        return rng.uniform(1.0, max(end / 2, 2.0) if kind == "stall_takeover_cancel" else end)

    faults = [PlannedFault(first_at(k), k, down(k), rng.randrange(1000)) for k in chosen]
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
        redis: RedisServer | SentinelRedis,
        pg: PostgresCluster | ReplicatedPostgres | None,
        sqlite_path: Path | None,
        env: dict[str, str],
        sleep: Callable[[float], None],
        canceller: Canceller,
        provider: ChaosProvider | None = None,
        pauser: Pauser | None = None,
        hold_dir: Path | None = None,
        skipper: Skipper | None = None,
    ) -> None:
        self.skipper = skipper
        self.hold_dir = hold_dir  # the workers' PAYSCHED_CHAOS_HOLD_DIR
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

    def kill_worker_child(self, fault: PlannedFault) -> dict[str, Any]:
        name = self._victim("worker", fault)
        return {"process": name, "child": self.procs.sigkill_child(name, fault.pick)}

    def kill_scheduler(self, fault: PlannedFault) -> dict[str, Any]:
        name = self._victim("scheduler", fault)
        return {"process": name, "killed": self.procs.sigkill(name, fault.down_s)}

    def cancel(self, fault: PlannedFault) -> dict[str, Any]:
        return self.canceller.cancel(fault.pick)

    def pause(self, fault: PlannedFault) -> dict[str, Any]:
        if self.pauser is None:
            raise RuntimeError("no pauser: this run pauses nothing")
        return self.pauser.pause(fault.down_s)

    def skip(self, fault: PlannedFault) -> dict[str, Any]:
        if self.skipper is None:
            raise RuntimeError("no skipper: this run skips nothing")
        return self.skipper.skip()

    def provider_kill(self, fault: PlannedFault) -> dict[str, Any]:
        assert self.provider is not None
        self.provider.collect_drawn()  # a restarted provider starts counting afresh
        return {"killed": self.procs.sigkill("provider-1", fault.down_s), "down_s": fault.down_s}

    def stall_takeover_cancel(self, fault: PlannedFault) -> dict[str, Any]:
        """The interleaving of issue 19 finding 1, staged on the next payment due: its first
        attempt reaches the provider (which charges it) and its worker stalls (held, see
        `node.StallingProvider`); the provider is SIGKILLed; another worker takes the attempt
        over and its request cannot connect; then the payment is cancelled, as a person would,
        and only after that the provider comes back and the stalled worker goes on (its
        success fenced out). The charge must not be buried: the occurrence is asked about
        first (the cancel refused, "executing: asking the provider first") and ends succeeded;
        provider_charged_once and cancel_wins check the end. The detail says how far the
        interleaving got: `taken_over`, what the takeover ended in, and the cancel's answer."""
        assert self.provider is not None and self.hold_dir is not None
        if not self._until(self.provider.up):  # a provider_kill before may still hold it down
            return {"outcome": "the provider did not come back"}
        # Not one awaiting approval: its first attempt waits for a decision the stage cannot make.
        payment = self.canceller.take_next_due(
            STAGE_LEAD, lambda p: p.payer != BROKE and not p.approval
        )
        if payment is None:
            return {"outcome": "nothing left to stall"}
        # Its first charge goes through and is answered at once (none of the stand-in's faults).
        self.provider.force(occurrence_key(payment.id, to_ms(payment.due_at)), "none")
        mark = self.hold_dir / str(payment.id)
        mark.touch()
        detail: dict[str, Any] = {"payment": payment.id, "taken_over": False}
        try:
            self._stage(payment.id, detail)
        finally:
            mark.unlink(missing_ok=True)  # the stalled worker goes on
            self.procs.revive("provider-1")
            detail["provider_back"] = bool(self._until(self.provider.up))
        return detail

    def _stage(self, payment_id: int, detail: dict[str, Any]) -> None:
        """The held attempt, the kill, the takeover and the cancel; what happened into
        `detail` (its "outcome" says where it stopped, if it did)."""
        assert self.provider is not None and self.hold_dir is not None
        held_at = self.hold_dir / f"{payment_id}.held"
        held = self._until(lambda: _read_json(held_at))
        if held is None:
            detail["outcome"] = "its first attempt was not held"
            return
        detail["first_attempt"] = held["outcome"]
        self.provider.collect_drawn()
        detail["provider_killed"] = self.procs.sigkill("provider-1", STAGE_TIMEOUT_S * 3)
        after = self._until(lambda: self._taken_over(payment_id, int(held["fence"])))
        if after is None:
            detail["outcome"] = "not taken over"
            return
        detail |= {"taken_over": True, "takeover_ended": after.state.value}
        answer = self.canceller.cancel_payment(payment_id, "takeover")
        detail["cancel"] = answer["outcome"]
        if "in_flight" in answer:
            detail["in_flight"] = answer["in_flight"]

    def _taken_over(self, payment_id: int, fence: int) -> Occurrence | None:
        """The payment's occurrence once another claim took it over from `fence` and that
        takeover's attempt ended (it is no longer executing)."""
        try:
            (occ,) = self.canceller.store.reads.occurrences_of(payment_id)
        except Exception:  # not there yet, or the harness's read failed: ask again
            return None
        return occ if occ.fence > fence and occ.state != OccurrenceState.EXECUTING else None

    def _until(self, probe: Callable[[], T | None]) -> T | None:
        """Ask `probe` every 50 ms (keeping the processes supervised) until it answers, at
        most STAGE_TIMEOUT_S; None if it never does."""
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while (found := probe()) is None or found is False:
            if time.monotonic() > deadline:
                return None
            self.sleep(0.05)
        return found

    def redis_failover(self, fault: PlannedFault) -> dict[str, Any]:
        """SIGKILL of the Redis primary; the sentinels promote the replica; the old primary
        back as its replica `down_s` later."""
        assert isinstance(self.redis, SentinelRedis)
        return self._fail_over(self.redis, fault)

    def _fail_over(
        self, servers: SentinelRedis | ReplicatedPostgres, fault: PlannedFault
    ) -> dict[str, Any]:
        promoted_s = servers.fail_over()
        promoted_at = time.time()
        self.sleep(fault.down_s)
        servers.reattach()
        return {
            "promoted_s": round(promoted_s, 2),
            "promoted_at": promoted_at,
            "reattached_after_s": fault.down_s,
        }

    def redis_restart(self, fault: PlannedFault) -> dict[str, Any]:
        assert isinstance(self.redis, RedisServer)
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
        return {"backends": self._pg_primary().terminate_backends()}

    def _pg_primary(self) -> PostgresCluster:
        assert self.pg is not None
        return self.pg.primary if isinstance(self.pg, ReplicatedPostgres) else self.pg

    def pg_switchover(self, fault: PlannedFault) -> dict[str, Any]:
        """The primary stopped (-m immediate) and its synchronous standby promoted; a new
        standby copied from it `down_s` later."""
        assert isinstance(self.pg, ReplicatedPostgres)
        return self._fail_over(self.pg, fault)

    def db_outage(self, fault: PlannedFault) -> dict[str, Any]:
        if self.pg is not None:
            primary = self._pg_primary()
            primary.stop("fast")
            try:
                self.sleep(fault.down_s)
            finally:
                primary.start()
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

        # A Redis restarted by the fault before may still be loading its data: the two ticks
        # wait it out as a scheduler's next tick would, within STAGE_TIMEOUT_S.
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        tries = 1
        while True:
            try:
                return {"enqueued": asyncio.run(both()), "tries": tries}
            except Exception:
                if time.monotonic() > deadline:
                    raise
            tries += 1
            self.sleep(0.5)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or half written
        return None
    return found
