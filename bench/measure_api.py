"""7. The HTTP API beside the CLI: creating payments and reading them.

Per database and run, on a fresh database: a real `paysched serve` process (API only, no
scheduler or workers), an admin API key from `paysched apikeys create`, two accounts and a
deposit over the API; then

- a floor: 50 sequential GET /healthz (no key, no database) from one keep-alive client;
- create: ApiSizes.create_payments payments by POST /v1/payments (a new Idempotency-Key each),
  sequentially from one keep-alive client, then again from 10 concurrent clients; afterwards
  the payments are counted by paging GET /v1/payments (by memo, per phase) and the delayed jobs
  in Redis, and must be exactly as many as were created;
- the same through the CLI: `paysched schedule ... --json` as sequential subprocesses (a few
  dozen; the time for 1,000 is extrapolated from their median, and the report says so);
- reads under load: 50 requests in flight for ApiSizes.read_duration_s against
  GET /v1/payments/{id} (random existing ids) and GET /v1/payments?limit=50; requests/s,
  latency, every non-200 an error; beside it `paysched show ID --json` and
  `paysched list --json` as sequential subprocesses.

Every payment is `"in": "1h"` with PAYSCHED_LOOKAHEAD=2h, so each create does the full work of
a payment due soon: the payment row, its occurrence, and a delayed BullMQ job (nothing executes:
no worker runs). Load generators (bench/api_load.py) are separate processes from the server,
but both share the machine's cores (2 on the development machine): requests/s is a floor of
what the server alone could do. The server runs with its defaults otherwise (its database
thread pool is min(PAYSCHED_CONCURRENCY + 4, 20) = 7 threads), the rate limit raised so it
never answers 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from paysched.redis_server import free_port

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from api_load import latency_summary  # isort: skip
from bench_harness import Ctx, median  # isort: skip
from common import ROOT, fresh_database, seed_accounts  # isort: skip

LOADGEN = ROOT / "bench" / "api_load.py"
LOOKAHEAD = "2h"
PAYMENT = {"from": "alice", "to": "bob", "amount": "1.00", "in": "1h"}
CORES_NOTE = (
    "load generator, CLI subprocesses and server share the machine's "
    f"{os.cpu_count()} cores: requests/s is a floor of the server alone"
)


@dataclass(frozen=True, slots=True)
class ApiSizes:
    create_payments: int = 1000
    create_concurrency: int = 10
    cli_schedules: int = 30
    read_concurrency: int = 50
    read_duration_s: float = 10.0
    read_warmup_s: float = 1.0
    cli_reads: int = 20


API_QUICK = ApiSizes(
    create_payments=200, cli_schedules=5, read_duration_s=3.0, read_warmup_s=0.5, cli_reads=5
)


# -- processes ------------------------------------------------------------------------------------


def server_env(ctx: Ctx, db_url: str, data_dir: Path, queue: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PAYSCHED_", "REDIS_"))}
    keep.pop("DATABASE_URL", None)
    return {
        **keep,
        "DATABASE_URL": db_url,
        "REDIS_URL": ctx.redis_url,
        "PAYSCHED_EMBEDDED_REDIS": "never",
        "PAYSCHED_DATA_DIR": str(data_dir),
        "PAYSCHED_QUEUE": queue,
        "PAYSCHED_QUEUE_PREFIX": "paysched-bench",
        "PAYSCHED_LOOKAHEAD": LOOKAHEAD,
        "PAYSCHED_API_RATE_LIMIT": "1000000",
        "PAYSCHED_LOG_LEVEL": "WARNING",
    }


async def run_cli(env: dict[str, str], *args: str, timeout: float = 120.0) -> tuple[float, str]:
    """`python -m paysched ARGS` as a subprocess: (wall seconds, stdout). Raises on non-zero."""
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paysched",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(
            f"paysched {' '.join(args[:2])} exited {proc.returncode}: "
            f"{err.decode(errors='replace').strip()[:300]}"
        )
    return elapsed, out.decode()


async def loadgen(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """bench/api_load.py in its own process; its JSON answer."""
    path = workdir / f"load-{secrets.token_hex(4)}.json"
    path.write_text(json.dumps(cfg))  # holds the API key: never on a command line
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(LOADGEN),
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 900)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
    finally:
        path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"api_load exited {proc.returncode}: {err.decode(errors='replace').strip()[-500:]}"
        )
    result: dict[str, Any] = json.loads(out)
    return result


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


@dataclass
class Server:
    url: str
    pid: int
    log: Path


@contextlib.asynccontextmanager
async def api_server(env: dict[str, str], workdir: Path) -> AsyncIterator[Server]:
    """`paysched serve` on a free port, until /healthz answers; terminated afterwards."""
    log_path = workdir / "serve.log"
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = free_port()
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "paysched",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            ready = False
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(base_url=url, timeout=2) as http:
                while time.monotonic() < deadline and proc.returncode is None:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/healthz")).status_code == 200:
                            ready = True
                            break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), 0.1)
            if not ready:
                if proc.returncode is not None and "cannot listen" in log_path.read_text():
                    continue
                tail = log_path.read_text()[-500:]
                raise RuntimeError(f"paysched serve did not become ready: {tail}")
            yield Server(url, proc.pid, log_path)
            return
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    raise RuntimeError("paysched serve: no free port after 3 attempts")


# -- verification ---------------------------------------------------------------------------------


async def payments_by_memo(http: httpx.AsyncClient) -> tuple[dict[str, int], list[int]]:
    """Every payment, paged through GET /v1/payments: count per memo, and all ids."""
    counts: dict[str, int] = {}
    ids: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        response = await http.get("/v1/payments", params=params)
        response.raise_for_status()
        page = response.json()
        for p in page["data"]:
            counts[p["memo"]] = counts.get(p["memo"], 0) + 1
            ids.append(int(p["id"]))
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return counts, ids


async def delayed_jobs(redis_url: str, queue: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return int(await client.zcard(f"paysched-bench:{queue}:delayed"))
    finally:
        await client.aclose()


# -- one run --------------------------------------------------------------------------------------


def wall_summary(seconds: Sequence[float]) -> dict[str, Any]:
    s = latency_summary(seconds)
    return {**s, "per_s": round(len(seconds) / sum(seconds), 2) if seconds else None}


async def create_phase(
    server: Server, key: str, workdir: Path, memo: str, n: int, concurrency: int
) -> dict[str, Any]:
    body = {**PAYMENT, "memo": memo}
    cpu = cpu_seconds(server.pid)
    r = await loadgen(
        {
            "url": server.url,
            "key": key,
            "mode": "create",
            "count": n,
            "concurrency": concurrency,
            "body": body,
            "prefix": f"{memo}-{secrets.token_hex(4)}",
        },
        workdir,
    )
    after = cpu_seconds(server.pid)
    ids = r.pop("ids")
    r["distinct_ids"] = len(set(ids))
    r["server_cpu_s"] = round(after - cpu, 2) if cpu is not None and after is not None else None
    return r


async def read_phase(
    server: Server, key: str, workdir: Path, mode: str, ids: list[int], sizes: ApiSizes
) -> dict[str, Any]:
    cpu = cpu_seconds(server.pid)
    r = await loadgen(
        {
            "url": server.url,
            "key": key,
            "mode": mode,
            "ids": ids,
            "concurrency": sizes.read_concurrency,
            "duration_s": sizes.read_duration_s,
            "warmup_s": sizes.read_warmup_s,
            "seed": random.randrange(2**31),
        },
        workdir,
    )
    after = cpu_seconds(server.pid)
    r["server_cpu_s"] = round(after - cpu, 2) if cpu is not None and after is not None else None
    return r


async def api_run(ctx: Ctx, kind: str, sizes: ApiSizes) -> dict[str, Any]:
    load_before = os.getloadavg()
    workdir = ctx.tmp / f"api-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True)
    queue = f"api-{secrets.token_hex(4)}"
    problems: list[str] = []
    try:
        with fresh_database(kind, workdir, ctx.pg_admin_url) as (db_url, _label):
            env = server_env(ctx, db_url, workdir, queue)
            _, out = await run_cli(env, "apikeys", "create", "bench", "--scope", "admin", "--json")
            key = json.loads(out)["key"]
            async with (
                api_server(env, workdir) as server,
                httpx.AsyncClient(
                    base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
                ) as http,
            ):
                await seed_accounts(http)

                # A floor under every request: sequential GET /healthz (no auth, no database).
                healthz: list[float] = []
                for _ in range(50):
                    began = time.perf_counter()
                    (await http.get("/healthz")).raise_for_status()
                    healthz.append(time.perf_counter() - began)

                n = sizes.create_payments
                seq = await create_phase(server, key, workdir, "api-seq", n, 1)
                conc = await create_phase(
                    server, key, workdir, "api-c10", n, sizes.create_concurrency
                )

                cli_times: list[float] = []
                cli_ids: list[int] = []
                for _ in range(sizes.cli_schedules):
                    seconds, out = await run_cli(
                        env,
                        "schedule",
                        "--from",
                        "alice",
                        "--to",
                        "bob",
                        "--amount",
                        "1.00",
                        "--in",
                        "1h",
                        "--memo",
                        "cli",
                        "--json",
                    )
                    cli_ids.append(int(json.loads(out)["id"]))
                    cli_times.append(seconds)

                counts, ids = await payments_by_memo(http)
                jobs = await delayed_jobs(ctx.redis_url, queue)
                expected = {"api-seq": n, "api-c10": n, "cli": sizes.cli_schedules}
                if len(set(cli_ids)) != sizes.cli_schedules:
                    problems.append(f"CLI printed {len(set(cli_ids))} distinct ids")
                if counts != expected:
                    problems.append(f"payments by phase {counts}, expected {expected}")
                if jobs != sum(expected.values()):
                    problems.append(f"{jobs} delayed jobs, expected {sum(expected.values())}")
                for name, phase in (("api seq", seq), ("api c=10", conc)):
                    if phase["errors"] or phase["distinct_ids"] != n:
                        problems.append(
                            f"{name}: {phase['errors']} errors, {phase['distinct_ids']} ids "
                            f"({phase['first_error']})"
                        )

                reads = {
                    mode: await read_phase(server, key, workdir, mode, ids, sizes)
                    for mode in ("get", "list")
                }
                for mode, r in reads.items():
                    if r["errors"]:
                        problems.append(f"read {mode}: {r['errors']} errors ({r['first_error']})")

                show_times: list[float] = []
                list_times: list[float] = []
                for _ in range(sizes.cli_reads):
                    seconds, out = await run_cli(env, "show", str(random.choice(ids)), "--json")
                    show_times.append(seconds)
                    seconds, out = await run_cli(env, "list", "--json")
                    list_times.append(seconds)
                server_rss = rss_mib(server.pid)
            log_tail = server.log.read_text()[-2000:]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    cli = wall_summary(cli_times)
    p50_s = (cli["p50"] or 0) / 1000
    return {
        "database": kind,
        "complete": not problems,
        "problems": problems,
        "lookahead": LOOKAHEAD,
        "payment": PAYMENT,
        "healthz_seq": latency_summary(healthz),
        "create_seq": seq,
        "create_c10": conc,
        "cli_schedule": {
            **cli,
            "runs": len(cli_times),
            "extrapolated_1000_s": round(1000 * p50_s, 1),
            "note": "sequential subprocesses; the time for 1,000 is extrapolated as 1,000 x p50, "
            "not measured",
        },
        "read_get": reads["get"],
        "read_list": reads["list"],
        "cli_show": wall_summary(show_times),
        "cli_list": wall_summary(list_times),
        "payments_by_memo": counts,
        "delayed_jobs": jobs,
        "server_peak_rss_mib": server_rss,
        # The machine may be shared: its load average (1 min) before and after the run.
        "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "server_log_tail": log_tail or None,
    }


# -- medians --------------------------------------------------------------------------------------


def _pick(runs: Sequence[dict[str, Any]], *path: str) -> float | None:
    values = []
    for r in runs:
        v: Any = r
        for part in path:
            v = v.get(part) if isinstance(v, dict) else None
        values.append(v if isinstance(v, int | float) else None)
    return median(values)


MEDIANS = {
    "healthz_seq_p50_ms": ("healthz_seq", "p50"),
    "create_seq_per_s": ("create_seq", "per_s"),
    "create_seq_p50_ms": ("create_seq", "latency_ms", "p50"),
    "create_seq_p99_ms": ("create_seq", "latency_ms", "p99"),
    "create_c10_per_s": ("create_c10", "per_s"),
    "create_c10_p50_ms": ("create_c10", "latency_ms", "p50"),
    "create_c10_p99_ms": ("create_c10", "latency_ms", "p99"),
    "cli_schedule_per_s": ("cli_schedule", "per_s"),
    "cli_schedule_p50_ms": ("cli_schedule", "p50"),
    "cli_schedule_p99_ms": ("cli_schedule", "p99"),
    "cli_schedule_1000_extrapolated_s": ("cli_schedule", "extrapolated_1000_s"),
    "read_get_per_s": ("read_get", "per_s"),
    "read_get_p50_ms": ("read_get", "latency_ms", "p50"),
    "read_get_p99_ms": ("read_get", "latency_ms", "p99"),
    "read_get_errors": ("read_get", "errors"),
    "read_list_per_s": ("read_list", "per_s"),
    "read_list_p50_ms": ("read_list", "latency_ms", "p50"),
    "read_list_p99_ms": ("read_list", "latency_ms", "p99"),
    "read_list_errors": ("read_list", "errors"),
    "cli_show_p50_ms": ("cli_show", "p50"),
    "cli_show_p99_ms": ("cli_show", "p99"),
    "cli_list_p50_ms": ("cli_list", "p50"),
    "cli_list_p99_ms": ("cli_list", "p99"),
}


async def bench_api(ctx: Ctx) -> dict[str, Any]:
    sizes = API_QUICK if ctx.quick else ApiSizes()
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        runs = []
        for number in range(1, ctx.runs + 1):
            r = await api_run(ctx, kind, sizes)
            seq, conc, cli = r["create_seq"], r["create_c10"], r["cli_schedule"]
            get, lst = r["read_get"], r["read_list"]
            print(
                f"  api {kind} run {number}: create seq {seq['per_s']}/s p99 "
                f"{seq['latency_ms']['p99']} ms, c={sizes.create_concurrency} {conc['per_s']}/s "
                f"p99 {conc['latency_ms']['p99']} ms; CLI schedule p50 {cli['p50']} ms; "
                f"c={sizes.read_concurrency} get {get['per_s']}/s p99 "
                f"{get['latency_ms']['p99']} ms ({get['errors']} err), list {lst['per_s']}/s "
                f"p99 {lst['latency_ms']['p99']} ms ({lst['errors']} err); CLI show p50 "
                f"{r['cli_show']['p50']} ms, list p50 {r['cli_list']['p50']} ms"
                + ("" if r["complete"] else f"; PROBLEMS: {'; '.join(r['problems'])}"),
                flush=True,
            )
            runs.append(r)
        out[kind] = {
            "runs": runs,
            "sizes": {k: getattr(sizes, k) for k in ApiSizes.__dataclass_fields__},
            **{f"median_{name}": _pick(runs, *path) for name, path in MEDIANS.items()},
            "complete": all(r["complete"] for r in runs),
            "note": CORES_NOTE,
        }
    print(f"  note: {CORES_NOTE}", flush=True)
    return out
