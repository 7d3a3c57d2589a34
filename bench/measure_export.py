"""12. Exports: a million occurrences out of PostgreSQL, by the CLI and over HTTP.

On a fresh PostgreSQL database (`paysched_bench_*`), filled in three INSERT ... SELECT
generate_series statements (2 accounts, 1,000 payments, Sizes.export_occurrences occurrences
due over January 2027), each run times, in this order:

- reference: `psql -c "COPY (SELECT <the same columns, joins and rows>) TO STDOUT CSV HEADER"`
  to /dev/null: PostgreSQL writing the rows with no Python at all (the bare floor);
- cli: `paysched export occurrences --from 2027-01-01 --to 2027-02-01` to /dev/null, a whole
  process from fork to exit, its peak RSS as /usr/bin/time reports it;
- http: `curl` streaming GET /v1/exports/occurrences from a `paysched serve` to /dev/null;
  the server's peak RSS is its VmHWM (reset before each run where the kernel lets us, else
  the peak since it started) beside its RSS before the export;
- store: the read alone, in this process, nothing formatted: keyset pages of EXPORT_PAGE by id
  (what exports use) against one server-side cursor (`stream_results`, `yield_per`), the
  choice db/store/exports.py explains.

Reported per variant: medians over --runs of the wall time, rows/s and peak MB, and the ratio
of the cli and http times to the reference's in the same run. PostgreSQL only: the point is
the million rows on the production database (SQLite is skipped, and says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from paysched.db.store import Store
from paysched.db.store.exports import EXPORT_PAGE, export_select
from paysched.exports import COLUMNS, export_request

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import Ctx, median  # isort: skip
from common import fresh_database  # isort: skip
from measure_api import api_server, server_env  # isort: skip

PAYMENTS = 1000
PERIOD = ("2027-01-01", "2027-02-01")

_FILL = (
    """INSERT INTO accounts (name, currency, kind, balance, created_at)
       VALUES ('bench-payer', 'EUR', 'user', 0, now()), ('bench-payee', 'EUR', 'user', 0, now())""",
    """INSERT INTO payments (payer_id, payee_id, amount, currency, state, due_at, memo,
                             created_at, updated_at)
       SELECT (SELECT id FROM accounts WHERE name = 'bench-payer'),
              (SELECT id FROM accounts WHERE name = 'bench-payee'),
              1000 + g, 'EUR', 'done', timestamptz '2027-01-01' + g * interval '1 minute',
              'bench', now(), now()
       FROM generate_series(1, :payments) AS g""",
    """INSERT INTO occurrences (payment_id, due_at, key, state, attempts, fence, reference,
                                started_at, finished_at, created_at, updated_at)
       SELECT p.first + g % :payments, timestamptz '2027-01-01' + g * interval '2 seconds',
              'pay-bench-' || g, 'succeeded', 1, 1, 'pay-bench-' || g,
              timestamptz '2027-01-01' + g * interval '2 seconds' + interval '3 ms',
              timestamptz '2027-01-01' + g * interval '2 seconds' + interval '40 ms',
              now(), now()
       FROM generate_series(1, :n) AS g, (SELECT min(id) AS first FROM payments) AS p""",
)
# The export's rows as PostgreSQL itself writes them: the same columns, joins, period, order.
_REFERENCE = """COPY (
  SELECT o.id, o.key, o.payment_id, o.due_at, o.nominal_at, o.state, o.attempts, p.amount,
         p.currency, payer.name, payee.name, o.reference, o.reason, o.started_at, o.finished_at,
         o.created_at, o.updated_at
  FROM occurrences o JOIN payments p ON p.id = o.payment_id
       JOIN accounts payer ON payer.id = p.payer_id JOIN accounts payee ON payee.id = p.payee_id
  WHERE o.due_at >= '2027-01-01T00:00:00Z' AND o.due_at < '2027-02-01T00:00:00Z'
  ORDER BY o.id
) TO STDOUT WITH (FORMAT csv, HEADER)"""


def fill(url: str, n: int) -> float:
    """The schema, then the rows; seconds it took."""
    began = time.perf_counter()
    store = Store.connect(url, pool_size=1)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            for statement in _FILL:
                conn.execute(text(statement), {"payments": PAYMENTS, "n": n})
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        store.close()
    return time.perf_counter() - began


def timed_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a process with stdout to /dev/null: (wall seconds, its peak RSS in MiB), the peak
    as GNU time reports it (%M). Not wait4's rusage of a child forked from here: the kernel
    counts the memory of the process that forked it, until the exec, into the child's peak
    (this bench's own ~85 MiB for psql too)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        began = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:4])} exited {done.returncode}: {done.stderr[-300:]}"
            )
        peak_kib = int(rss.read().strip().splitlines()[-1])
    return elapsed, peak_kib / 1024


def _proc_kib(pid: int, field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def store_read(url: str, n: int) -> dict[str, float]:
    """The read alone, rows fetched and dropped: keyset pages vs one server-side cursor."""
    asked = export_request("occurrences", "csv", *PERIOD)
    store = Store.connect(url, pool_size=1)
    try:
        began = time.perf_counter()
        after, rows = 0, 0
        while True:
            page = store.exports.export_page("occurrences", asked.start, asked.end, after)
            rows += len(page)
            if len(page) < EXPORT_PAGE:
                break
            after = int(page[-1].id)
        keyset = time.perf_counter() - began
        assert rows == n, (rows, n)
        query, id_col, time_col = export_select("occurrences")
        query = query.where(time_col >= asked.start, time_col < asked.end).order_by(id_col)
        began = time.perf_counter()
        rows = 0
        with store.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=EXPORT_PAGE).execute(
                query
            )
            for part in result.partitions():
                rows += len(part)
        cursor = time.perf_counter() - began
        assert rows == n, (rows, n)
    finally:
        store.close()
    return {"keyset_s": keyset, "cursor_s": cursor}


def _summary(
    times: list[float], peaks: list[float | None], n: int, ref: list[float]
) -> dict[str, Any]:
    s = median(times)
    return {
        "median_s": None if s is None else round(s, 2),
        "median_rows_per_s": None if not s else round(n / s),
        "median_peak_mib": median([p for p in peaks if p is not None]),
        "median_vs_reference": median([t / r for t, r in zip(times, ref, strict=True)]),
        "times_s": [round(t, 2) for t in times],
    }


async def export_run(ctx: Ctx) -> dict[str, Any]:
    n = ctx.sizes.export_occurrences
    run_dir = ctx.tmp / f"export-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    try:
        with fresh_database("postgresql", run_dir, ctx.pg_admin_url) as (url, _label):
            fill_s = await asyncio.to_thread(fill, url, n)
            print(f"  export postgresql: {n:,} occurrences filled in {fill_s:.1f} s", flush=True)
            env = server_env(ctx, url, run_dir / "data", f"export-{secrets.token_hex(4)}")
            key = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "paysched",
                        "apikeys",
                        "create",
                        "bench",
                        "--scope",
                        "read",
                        "--json",
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )["key"]
            psql_url = url.replace("postgresql+psycopg://", "postgresql://")
            export = [
                sys.executable,
                "-m",
                "paysched",
                "export",
                "occurrences",
                "--from",
                PERIOD[0],
                "--to",
                PERIOD[1],
            ]
            ref: dict[str, list[Any]] = {"t": [], "peak": []}
            cli: dict[str, list[Any]] = {"t": [], "peak": []}
            http: dict[str, list[Any]] = {"t": [], "peak": [], "before": []}
            store: dict[str, list[float]] = {"keyset_s": [], "cursor_s": []}
            async with api_server(env, run_dir) as server:
                for _ in range(ctx.runs):
                    t, peak = await asyncio.to_thread(
                        timed_child, ["psql", psql_url, "-X", "-q", "-c", _REFERENCE]
                    )
                    ref["t"].append(t)
                    ref["peak"].append(peak)
                    t, peak = await asyncio.to_thread(timed_child, export, env)
                    cli["t"].append(t)
                    cli["peak"].append(peak)
                    reset = reset_peak(server.pid)
                    http["before"].append((_proc_kib(server.pid, "VmRSS") or 0) / 1024)
                    url_export = (
                        f"{server.url}/v1/exports/occurrences?format=csv"
                        f"&from={PERIOD[0]}&to={PERIOD[1]}"
                    )
                    t, _ = await asyncio.to_thread(
                        timed_child,
                        [
                            "curl",
                            "-sSf",
                            "-o",
                            "/dev/null",
                            "-H",
                            f"Authorization: Bearer {key}",
                            url_export,
                        ],
                    )
                    http["t"].append(t)
                    hwm = _proc_kib(server.pid, "VmHWM")
                    http["peak"].append(None if hwm is None else hwm / 1024)
                    for name, value in (await asyncio.to_thread(store_read, url, n)).items():
                        store[name].append(value)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    columns = len(COLUMNS["occurrences"])
    result = {
        "occurrences": n,
        "columns": columns,
        "fill_s": round(fill_s, 1),
        "reference": _summary(ref["t"], ref["peak"], n, ref["t"]),
        "cli": _summary(cli["t"], cli["peak"], n, ref["t"]),
        "http": {
            **_summary(http["t"], http["peak"], n, ref["t"]),
            "median_rss_before_mib": median(http["before"]),
            "peak_since": "export start" if reset else "server start",
        },
        "store_read": {
            "median_keyset_pages_s": median(store["keyset_s"]),
            "median_server_cursor_s": median(store["cursor_s"]),
            "page": EXPORT_PAGE,
        },
        "complete": True,
    }
    return result


async def bench_export(ctx: Ctx) -> dict[str, Any]:
    if "postgresql" not in ctx.databases:
        print("  export: PostgreSQL only; skipped", flush=True)
        return {}
    r = await export_run(ctx)
    for name in ("reference", "cli", "http"):
        v = r[name]
        print(
            f"  export postgresql {name:<9}: {v['median_s']} s, {v['median_rows_per_s']:,} "
            f"rows/s, peak {v['median_peak_mib']} MiB, x{v['median_vs_reference']} of "
            f"the reference",
            flush=True,
        )
    s = r["store_read"]
    print(
        f"  export postgresql read alone: keyset pages {s['median_keyset_pages_s']:.2f} s, "
        f"server-side cursor {s['median_server_cursor_s']:.2f} s",
        flush=True,
    )
    return {"postgresql": r}
