"""The queue's job counts per state, without importing bullmq.

`paysched stats` needs nothing of BullMQ but its counts, and importing bullmq costs ~0.1 s of
a command meant to answer at once. The counts come from BullMQ's own `getCounts` Lua script,
read from the installed bullmq package and run with the keys and arguments
`Queue.getJobCounts` gives it: the same numbers by construction (it also drops the deprecated
wait-list markers, as BullMQ does). tests/integration/test_queue_counts.py compares the two.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

# The states `paysched stats` reports, in its order; "total" is their sum.
QUEUE_STATES = ("waiting", "prioritized", "active", "delayed", "completed", "failed", "paused")
_SCRIPT = "getCounts-1.lua"


@functools.cache
def counts_script() -> str:
    """BullMQ's getCounts script, found without importing the package."""
    spec = importlib.util.find_spec("bullmq")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("bullmq is not installed")
    return (Path(spec.submodule_search_locations[0]) / "commands" / _SCRIPT).read_text()


async def queue_counts(client: Any, name: str, prefix: str) -> dict[str, int]:
    """{state: jobs} for QUEUE_STATES plus "total", as PaymentQueue.counts reports them.

    `client`: a redis.asyncio.Redis on the queue's server."""
    # BullMQ's KEYS[1] is the queue's key prefix; it calls the waiting list "wait".
    args = ["wait" if state == "waiting" else state for state in QUEUE_STATES]
    raw = await client.register_script(counts_script())(keys=[f"{prefix}:{name}:"], args=args)
    counts = {state: int(value or 0) for state, value in zip(QUEUE_STATES, raw, strict=True)}
    counts["total"] = sum(counts.values())
    return counts
