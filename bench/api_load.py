#!/usr/bin/env python3
"""The HTTP load generator of bench/measure_api.py, run as its own process so that it does not
share the server's (or the bench's) event loop: `python bench/api_load.py CONFIG.json`.

CONFIG (JSON): {"url", "key", "mode": "create" | "get" | "list", "concurrency", and
  create: "count", "body" (the POST /v1/payments body), "prefix" (of the Idempotency-Keys);
  get/list: "duration_s", "warmup_s", get: "ids" (picked at random)}.

Each of the `concurrency` tasks has its own keep-alive connection (httpx.AsyncClient) and
keeps one request in flight. Prints one JSON object: requests, ok, errors by status, transport
exceptions, elapsed, requests/s, latency percentiles (ms), the ids created (create), and this
process's CPU seconds. Any status other than the expected one (201 create, 200 reads) is an
error. Only httpx and the standard library: the measurement imports none of paysched.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_S = 30.0


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (as common.percentile), on sorted values."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Percentiles in ms of latencies given in seconds."""
    ms = sorted(s * 1000 for s in seconds)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "count": len(ms),
        "mean": r(statistics.fmean(ms)) if ms else None,
        "p50": r(percentile(ms, 50)),
        "p90": r(percentile(ms, 90)),
        "p99": r(percentile(ms, 99)),
        "max": r(ms[-1]) if ms else None,
    }


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.exceptions: dict[str, int] = {}
        self.ids: list[int] = []
        self.first_error: str | None = None

    def status(self, response: httpx.Response, expected: int) -> bool:
        if response.status_code == expected:
            return True
        key = str(response.status_code)
        self.errors[key] = self.errors.get(key, 0) + 1
        if self.first_error is None:
            self.first_error = f"{response.status_code} {response.text[:300]}"
        return False

    def exception(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.exceptions[name] = self.exceptions.get(name, 0) + 1
        if self.first_error is None:
            self.first_error = f"{name}: {exc}"[:300]


def client(cfg: dict[str, Any]) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=cfg["url"],
        headers={"Authorization": f"Bearer {cfg['key']}"},
        timeout=TIMEOUT_S,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def create(cfg: dict[str, Any], tally: Tally) -> float:
    """POST /v1/payments `count` times, each with its own Idempotency-Key; returns seconds."""
    count: int = cfg["count"]
    body: dict[str, Any] = cfg["body"]
    prefix: str = cfg["prefix"]
    numbers = iter(range(count))

    async def task() -> None:
        async with client(cfg) as http:
            for i in numbers:  # shared: each number is taken by exactly one task
                began = time.perf_counter()
                try:
                    response = await http.post(
                        "/v1/payments", json=body, headers={"Idempotency-Key": f"{prefix}-{i}"}
                    )
                except httpx.HTTPError as exc:
                    tally.exception(exc)
                    continue
                tally.latencies.append(time.perf_counter() - began)
                if tally.status(response, 201):
                    tally.ids.append(int(response.json()["id"]))

    began = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(cfg["concurrency"])))
    return time.perf_counter() - began


async def read(cfg: dict[str, Any], tally: Tally) -> float:
    """GET one payment (random id) or the first page of payments, from `concurrency` tasks,
    for `duration_s`; requests started in the first `warmup_s` are not counted."""
    ids: list[int] = cfg.get("ids") or []
    get = cfg["mode"] == "get"
    rng = random.Random(cfg.get("seed", 1))
    start = time.perf_counter()
    measure_from = start + float(cfg.get("warmup_s", 0.0))
    end = measure_from + float(cfg["duration_s"])

    async def task() -> None:
        async with client(cfg) as http:
            while (began := time.perf_counter()) < end:
                path = f"/v1/payments/{rng.choice(ids)}" if get else "/v1/payments?limit=50"
                counted = began >= measure_from
                try:
                    response = await http.get(path)
                except httpx.HTTPError as exc:
                    if counted:
                        tally.exception(exc)
                    continue
                if counted:
                    tally.latencies.append(time.perf_counter() - began)
                    tally.status(response, 200)

    await asyncio.gather(*(task() for _ in range(cfg["concurrency"])))
    # The last requests end after `end`: the window is measured until the last one finished.
    return time.perf_counter() - measure_from


async def main_async(cfg: dict[str, Any]) -> dict[str, Any]:
    tally = Tally()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = await (create(cfg, tally) if cfg["mode"] == "create" else read(cfg, tally))
    after = resource.getrusage(resource.RUSAGE_SELF)
    requests = len(tally.latencies) + sum(tally.exceptions.values())
    errors = sum(tally.errors.values()) + sum(tally.exceptions.values())
    return {
        "mode": cfg["mode"],
        "concurrency": cfg["concurrency"],
        "requests": requests,
        "ok": requests - errors,
        "errors": errors,
        "errors_by_status": tally.errors,
        "exceptions": tally.exceptions,
        "first_error": tally.first_error,
        "elapsed_s": round(elapsed, 3),
        "per_s": round((requests - errors) / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": latency_summary(tally.latencies),
        "loadgen_cpu_s": round(after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime, 2),
        **({"ids": tally.ids} if cfg["mode"] == "create" else {}),
    }


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: api_load.py CONFIG.json", file=sys.stderr)
        return 2
    cfg = json.loads(Path(argv[0]).read_text())
    print(json.dumps(asyncio.run(main_async(cfg))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
