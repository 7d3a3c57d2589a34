"""7. The command line's wall time: whole `paysched` processes, as a user runs them."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

import paysched

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import TARGETS, Ctx  # isort: skip
from common import fresh_database, percentile  # isort: skip


# -- 7. cli ---------------------------------------------------------------------------------------

# name -> (arguments, target key in TARGETS or None). `{n}` is the repetition's number, so
# that every write creates something new.
CLI_COMMANDS: dict[str, tuple[list[str], str | None]] = {
    "--help": (["--help"], "cli_help_s"),
    "stats --json": (["stats", "--json"], "cli_stats_s"),
    "list --json": (["list", "--json"], None),
    "accounts create": (["accounts", "create", "bench-{n}"], None),
    "schedule": (
        [
            "schedule",
            "--from",
            "bench-payer",
            "--to",
            "bench-payee",
            "--amount",
            "1.00",
            "--in",
            "1h",
            "--memo",
            "bench-{n}",
        ],
        None,
    ),
}
# Data the read commands find: payments to list, occurrences and notifications to count.
SEED_PAYMENTS = 20


def cli_env(ctx: Ctx, database_url: str, data_dir: Path) -> dict[str, str]:
    """The environment of a user's shell, with this run's database and a queue of its own on
    the suite's Redis; paysched from the same source tree as this bench."""
    source = str(Path(paysched.__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PAYSCHED_", "REDIS_"))},
        "PYTHONPATH": source + (os.pathsep + inherited if inherited else ""),
        "REDIS_URL": ctx.redis_url,
        "DATABASE_URL": database_url,
        "PAYSCHED_DATA_DIR": str(data_dir),
        "PAYSCHED_EMBEDDED_REDIS": "never",
        "PAYSCHED_QUEUE": f"cli-{secrets.token_hex(4)}",
        "PAYSCHED_QUEUE_PREFIX": "paysched-bench",
        "PAYSCHED_LOG_LEVEL": "WARNING",
    }


def run_cli(env: dict[str, str], args: Sequence[str]) -> float:
    """One `paysched` process from fork to exit: its wall time in seconds."""
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "paysched", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(
            f"paysched {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-300:]}"
        )
    return elapsed


def seed(env: dict[str, str]) -> None:
    """Accounts and payments for the read commands (through the CLI: the first write also
    creates the schema, as on a fresh install)."""
    run_cli(env, ["accounts", "create", "bench-payer"])
    run_cli(env, ["accounts", "create", "bench-payee"])
    run_cli(env, ["accounts", "deposit", "bench-payer", "1000.00"])
    for i in range(SEED_PAYMENTS):
        # Some due within the lookahead (enqueued: the queue counts are not all zero).
        due = "30s" if i % 2 else "2h"
        run_cli(
            env,
            [
                "schedule",
                "--from",
                "bench-payer",
                "--to",
                "bench-payee",
                "--amount",
                "0.01",
                "--in",
                due,
            ],
        )


def summarise_times(values: Sequence[float], target: float | None) -> dict[str, Any]:
    ordered = sorted(values)
    median = round(percentile(ordered, 50), 3)
    return {
        "runs": len(ordered),
        "median_s": median,
        "p90_s": round(percentile(ordered, 90), 3),
        "min_s": round(ordered[0], 3),
        "max_s": round(ordered[-1], 3),
        "target_s": target,
        "met": None if target is None else median <= target,
    }


def cli_run(ctx: Ctx, kind: str, repeats: int) -> dict[str, Any]:
    """Every command of CLI_COMMANDS `repeats` times, round-robin (so that a noisy moment of
    the machine spreads over all of them), after one unmeasured warm-up each (bytecode
    compiled, files in the page cache)."""
    run_dir = ctx.tmp / f"cli-{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True)
    try:
        with fresh_database(kind, run_dir, ctx.pg_admin_url) as (db_url, _label):
            env = cli_env(ctx, db_url, run_dir / "data")
            try:
                seed(env)
                times: dict[str, list[float]] = {name: [] for name in CLI_COMMANDS}
                for n in range(repeats + 1):
                    for name, (args, _) in CLI_COMMANDS.items():
                        elapsed = run_cli(env, [a.format(n=n) for a in args])
                        if n > 0:
                            times[name].append(elapsed)
            finally:
                drop_queue(ctx.redis_url, env["PAYSCHED_QUEUE_PREFIX"], env["PAYSCHED_QUEUE"])
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {
        name: summarise_times(values, TARGETS.get(CLI_COMMANDS[name][1] or ""))
        for name, values in times.items()
    }


def drop_queue(redis_url: str, prefix: str, name: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:{name}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


async def bench_cli(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ctx.databases:
        # Processes, not coroutines: run off the event loop, one command at a time.
        result = await asyncio.to_thread(cli_run, ctx, kind, ctx.sizes.cli_repeats)
        for name, r in result.items():
            target = (
                ""
                if r["target_s"] is None
                else f" (target <= {r['target_s']:g} s: " + ("met)" if r["met"] else "MISSED)")
            )
            print(
                f"  cli {kind}: paysched {name:<16} median {r['median_s']:.3f} s, "
                f"p90 {r['p90_s']:.3f} s over {r['runs']} runs{target}",
                flush=True,
            )
        # Every process exited 0 (else run_cli raised); targets missed are reported, not errors.
        out[kind] = {"repeats": ctx.sizes.cli_repeats, "commands": result, "complete": True}
    return out
