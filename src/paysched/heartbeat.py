"""Heartbeats: which paysched processes are alive, what each does, and when it was last seen.

Every process writes, every BEAT_S seconds, ONE `HSET` of a hash under its queue's keys
(`<prefix>:<queue>:paysched:processes`, isolated exactly as the queue is): a field per role it
runs (`host:pid:role`: worker, scheduler, resolver, delivery, api), valued with a small JSON
object. A role is written only while its loop is alive, so a scheduler task that died in a
process whose workers go on stops beating on its own. A process that stops cleanly writes a
last beat marked `stopped`; one that is killed just stops writing, and is shown down after
DOWN_AFTER_BEATS missed beats. Readers (the API, `paysched stats`) drop fields not written for
a day: the hash stays as small as the deployment.

Idle cost: 1 Redis command per process per BEAT_S (0.2/s), whatever the roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from paysched.clock import Clock
from paysched.views import iso

log = logging.getLogger(__name__)

BEAT_S = 5.0
DOWN_AFTER_BEATS = 3  # missed beats before a process is shown down
FORGET_AFTER = timedelta(days=1)
ROLES = ("worker", "scheduler", "resolver", "delivery", "api")


def processes_key(prefix: str, queue: str) -> str:
    """The hash, beside the queue's own keys (BullMQ's `<prefix>:<queue>:<type>`)."""
    return f"{prefix}:{queue}:paysched:processes"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Heartbeat:
    """One process's beats: the roles it runs, each with a check that its loop is alive.

    `run` and `serve` (the API) add their roles to the same Heartbeat of an App, so a
    `paysched run --api` still writes one HSET per beat."""

    def __init__(
        self,
        redis: Any,
        key: str,
        queue: str,
        clock: Clock,
        every_s: float = BEAT_S,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.redis, self.key, self.queue, self.clock = redis, key, queue, clock
        self.every_s = every_s
        self.host = host or socket.gethostname()
        self.pid = pid or os.getpid()
        self._roles: dict[str, Callable[[], bool]] = {}
        self._started: dict[str, datetime] = {}
        self._alive: set[str] = set()  # the roles of the last beat
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def field(self, role: str) -> str:
        return f"{self.host}:{self.pid}:{role}"

    def _value(self, role: str, now: datetime, stopped: bool = False) -> str:
        return json.dumps(
            {
                "role": role,
                "host": self.host,
                "pid": self.pid,
                "queue": self.queue,
                "started_at": iso(self._started[role]),
                "last_seen": iso(now),
                "stopped": stopped,
            }
        )

    async def beat(self) -> None:
        """One HSET of every role whose loop is alive (nothing when none is)."""
        now = self.clock.now()
        alive = [role for role, check in self._roles.items() if check()]
        self._alive = set(alive)
        if alive:
            beats = {self.field(role): self._value(role, now) for role in alive}
            await self.redis.hset(self.key, mapping=beats)

    @contextlib.asynccontextmanager
    async def beating(self, roles: Mapping[str, Callable[[], bool]]) -> AsyncIterator[None]:
        """Beat for `roles` while inside; on a clean way out, one last beat marks those
        stopped that were alive at the last beat (one whose loop died before, or a way out by
        an exception, stays down: it did not stop as asked)."""
        now = self.clock.now()
        for role, check in roles.items():
            self._roles[role] = check
            self._started[role] = now
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="paysched-heartbeat")
        else:
            self._wake.set()  # the new roles show up at once, not at the next beat
        clean = False
        try:
            yield
            clean = True
        finally:
            for role in roles:
                self._roles.pop(role, None)
            now, ended = self.clock.now(), [r for r in roles if r in self._alive]
            # Redis away or hung: it is shown down instead, and shutdown is not held up.
            with contextlib.suppress(Exception):
                if ended and clean:
                    stopped = {self.field(r): self._value(r, now, True) for r in ended}
                    await asyncio.wait_for(self.redis.hset(self.key, mapping=stopped), 2.0)
            if not self._roles and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.beat()
            except Exception as exc:  # Redis away: the queue reports that on its own
                log.debug("heartbeat failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every_s)


def process_view(raw: Mapping[str, Any], now: datetime, every_s: float = BEAT_S) -> dict[str, Any]:
    """One process role as the API and the dashboard show it: `state` up, down (no beat for
    DOWN_AFTER_BEATS beats) or stopped (it said so), and `seen_s_ago`."""
    last = datetime.fromisoformat(str(raw["last_seen"]))
    ago = max(0.0, (now - last).total_seconds())
    if raw.get("stopped"):
        state = "stopped"
    else:
        state = "down" if ago > every_s * DOWN_AFTER_BEATS else "up"
    return {
        "role": str(raw["role"]),
        "host": str(raw["host"]),
        "pid": int(raw["pid"]),
        "queue": str(raw["queue"]),
        "started_at": raw.get("started_at"),
        "last_seen": raw["last_seen"],
        "seen_s_ago": round(ago, 1),
        "state": state,
    }


async def read_processes(redis: Any, key: str, now: datetime) -> list[dict[str, Any]]:
    """Every process role seen within FORGET_AFTER, by role then host then pid: one HGETALL,
    and one HDEL of the older ones when there are any."""
    seen: dict[Any, Any] = await redis.hgetall(key)
    out, forget = [], []
    for raw_field, raw_value in seen.items():
        try:
            view = process_view(json.loads(_text(raw_value)), now)
        except (ValueError, KeyError, TypeError):
            forget.append(raw_field)  # not ours, or an older shape: nothing to show
            continue
        if view["seen_s_ago"] > FORGET_AFTER.total_seconds():
            forget.append(raw_field)
        else:
            out.append(view)
    if forget:
        await redis.hdel(key, *forget)
    order = {role: i for i, role in enumerate(ROLES)}
    return sorted(out, key=lambda v: (order.get(v["role"], len(ROLES)), v["host"], v["pid"]))
