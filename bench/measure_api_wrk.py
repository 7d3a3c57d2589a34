#!/usr/bin/env python3
"""POST /v1/payments and GET /v1/payments/{id} under `wrk`, beside a bare reference.

`python bench/measure_api_wrk.py [--database postgresql|sqlite|both] [--runs 3]
[--duration 10] [--out FILE.json]`

Per database and run, on a fresh database and a private redis-server: `paysched serve` (API
only; PAYSCHED_LOOKAHEAD=2h and `"in": "1h"`, so each create also materializes its occurrence
and enqueues a delayed job) and the bare reference (bench/bare_api.py: FastAPI + uvicorn +
psycopg_pool, the same INSERT ... RETURNING / SELECT by id on its own table, in the same
PostgreSQL database; on SQLite too the reference runs on PostgreSQL — it is the floor of the
framework, not of the database). Then, for each app in turn: `wrk` POST at 10 connections
(a new Idempotency-Key per request) and GET by random existing id at 50 connections, each for
--duration seconds. `wrk` is C (Debian's package) with one thread, so the load generator takes
little of the 2 cores. Reported: requests/s, p50/p99, non-2xx, and each route's ratio
paysched / bare; medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

from paysched.redis_server import free_port

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, QUICK, median  # isort: skip
from common import DEFAULT_PG_ADMIN_URL, PrivateRedis, fresh_database, seed_accounts  # isort: skip
from measure_api import PAYMENT, api_server, run_cli, server_env  # isort: skip

BENCH = Path(__file__).resolve().parent
POST_CONNECTIONS = 10
GET_CONNECTIONS = 50

POST_LUA = """
wrk.method = "POST"
wrk.path = "/v1/payments"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local n = 0
function request()
  n = n + 1
  wrk.headers["Idempotency-Key"] = "%(prefix)s-" .. n
  return wrk.format()
end
local told = false
function response(status, headers, body)  -- the first error's body, for the report
  if status ~= 201 and not told then
    told = true
    io.stderr:write(status .. " " .. body .. "\\n")
  end
end
"""
GET_LUA = """
wrk.headers["Authorization"] = "Bearer %(key)s"
math.randomseed(%(seed)d)
function request()
  return wrk.format("GET", "/v1/payments/" .. math.random(%(lo)d, %(hi)d))
end
"""
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out: str) -> dict[str, Any]:
    def latency(pct: str) -> float | None:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return round(float(m.group(1)) * UNIT_MS[m.group(2)], 2) if m else None

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "per_s": float(rps.group(1)) if rps else None,
        "requests": int(total.group(1)) if total else None,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0,
    }


async def wrk(
    url: str, lua: str, connections: int, duration: float, workdir: Path
) -> dict[str, Any]:
    script = workdir / f"wrk-{secrets.token_hex(4)}.lua"
    script.write_text(lua)  # holds the API key: never on a command line
    try:
        proc = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    finally:
        script.unlink(missing_ok=True)
    if err.strip():
        print(f"    wrk: first error: {err.decode(errors='replace').strip()[:300]}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {err.decode()[-300:]}")
    return parse_wrk(out.decode())


@contextlib.asynccontextmanager
async def bare_server(dsn: str, workdir: Path) -> AsyncIterator[str]:
    port = free_port()
    log = workdir / "bare.log"
    with log.open("ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            "bare_api:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            cwd=BENCH,
            env={**os.environ, "BARE_DSN": dsn},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/v1/payments/0")).status_code == 404:
                        break
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise RuntimeError(f"bare_api did not start: {log.read_text()[-500:]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def max_id(http: httpx.AsyncClient) -> int:
    r = await http.get("/v1/payments", params={"limit": 1})
    r.raise_for_status()
    return int(r.json()["data"][0]["id"])


async def one_run(ctx: Ctx, kind: str, duration: float) -> dict[str, Any]:
    workdir = ctx.tmp / f"wrk-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True)
    queue = f"wrk-{secrets.token_hex(4)}"
    body = json.dumps({**PAYMENT, "memo": "wrk"})
    out: dict[str, Any] = {"database": kind}
    try:
        with (
            fresh_database(kind, workdir, ctx.pg_admin_url) as (db_url, _),
            fresh_database("postgresql", workdir, ctx.pg_admin_url) as (bare_url, _),
        ):
            env = server_env(ctx, db_url, workdir, queue)
            _, printed = await run_cli(
                env, "apikeys", "create", "wrk", "--scope", "admin", "--json"
            )
            key = json.loads(printed)["key"]
            dsn = make_url(bare_url).set(drivername="postgresql").render_as_string(False)
            async with (
                api_server(env, workdir) as server,
                bare_server(dsn, workdir) as bare,
                httpx.AsyncClient(
                    base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
                ) as http,
            ):
                await seed_accounts(http)
                for app, url in (("paysched", server.url), ("bare", bare)):
                    post = POST_LUA % {
                        "body": json.dumps(body),
                        "key": key,
                        "prefix": secrets.token_hex(6),
                    }
                    out[f"{app}_post"] = await wrk(url, post, POST_CONNECTIONS, duration, workdir)
                    if app == "paysched":
                        hi = await max_id(http)
                    else:
                        with psycopg.connect(dsn) as conn:
                            row = conn.execute("SELECT max(id) FROM bare_payments").fetchone()
                        hi = int(row[0]) if row and row[0] else 1
                    get = GET_LUA % {
                        "key": key,
                        "seed": secrets.randbelow(2**31),
                        "lo": 1,
                        "hi": hi,
                    }
                    out[f"{app}_get"] = await wrk(url, get, GET_CONNECTIONS, duration, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for route in ("post", "get"):
        mine, ref = out[f"paysched_{route}"]["per_s"], out[f"bare_{route}"]["per_s"]
        out[f"{route}_ratio"] = round(mine / ref, 3) if mine and ref else None
    return out


KEYS = [f"{app}_{route}" for route in ("post", "get") for app in ("paysched", "bare")]


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database", choices=("postgresql", "sqlite", "both"), default="postgresql"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    databases = ("postgresql", "sqlite") if args.database == "both" else (args.database,)
    tmp = Path(tempfile.mkdtemp(prefix="paysched-wrk-"))
    private = PrivateRedis(tmp / "redis")
    report: dict[str, Any] = {
        "duration_s": args.duration,
        "post_connections": POST_CONNECTIONS,
        "get_connections": GET_CONNECTIONS,
    }
    try:
        ctx = Ctx(
            redis_url=private.start(),
            tmp=tmp,
            pg_admin_url=args.pg_admin_url,
            databases=databases,
            runs=args.runs,
            burst_runs=args.runs,
            scale_runs=1,
            sizes=QUICK,
            quick=False,
        )
        for kind in databases:
            runs = []
            for number in range(1, args.runs + 1):
                r = await one_run(ctx, kind, args.duration)
                print(
                    f"  {kind} run {number}: "
                    + "; ".join(
                        f"{k} {r[k]['per_s']}/s p99 {r[k]['p99_ms']} ms"
                        + (f" ({r[k]['non_2xx']} non-2xx)" if r[k]["non_2xx"] else "")
                        for k in KEYS
                    )
                    + f"; ratio post {r['post_ratio']}, get {r['get_ratio']}",
                    flush=True,
                )
                runs.append(r)
            medians: dict[str, Any] = {
                f"{k}_{m}": median([r[k][m] for r in runs])
                for k in KEYS
                for m in ("per_s", "p50_ms", "p99_ms")
            }
            medians |= {
                f"{route}_ratio": median([r[f"{route}_ratio"] for r in runs])
                for route in ("post", "get")
            }
            report[kind] = {"runs": runs, "medians": medians}
            print(f"  {kind} medians: {json.dumps(medians)}", flush=True)
    finally:
        private.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
