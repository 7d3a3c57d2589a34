#!/usr/bin/env python3
"""What a failover costs: a real `paysched run` group paying a steady stream of payments while
the Redis primary (under Sentinel) or the PostgreSQL primary (with a synchronous standby) is
lost, again and again.

    python bench/measure_failover.py --kind redis --rounds 5
    python bench/measure_failover.py --kind postgresql --rounds 5
    python bench/measure_failover.py --kind postgresql --hang --rounds 3

Per round: the primary is killed (Redis: SIGKILL; PostgreSQL: `pg_ctl stop -m immediate`, or
with --hang its processes frozen with SIGSTOP, as a machine that stops answering),
the replica / standby is promoted (by the sentinels / `pg_ctl promote`), and the old primary
comes back as its replica / standby before the next round. Reported per round and as median
and max:
  promoted_s  kill -> the promoted server answers as primary
  recovery_s  kill -> the first payment completed after the promotion
  due_during  payments due between the kill and that first completion, and the largest start
              lateness among them
At the end: every payment succeeded exactly once and the ledger balances (exit 1 otherwise).
Servers are private, on free ports, in a temp dir; the machine's shared servers are not used.
JSON: bench/results/failover-<kind>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from paysched.chaos.servers import ReplicatedPostgres, SentinelRedis, wait_until
from paysched.config import normalise_database_url
from paysched.db.store import Store
from paysched.domain import Occurrence, OccurrenceState
from paysched.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
# One payment due every GAP_S seconds, from the start to past the last round.
GAP_S = 0.1
STEADY_S = 6.0  # paying normally before each kill


class Replicated(Protocol):
    def fail_over(self) -> float: ...
    def reattach(self) -> None: ...


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kind", choices=["redis", "postgresql"], required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hang", action="store_true", help="postgresql: freeze, do not stop")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="paysched-failover-"))
    redis: SentinelRedis | RedisProcess
    pg: ReplicatedPostgres | None = None
    group: subprocess.Popen[bytes] | None = None
    store: Store | None = None
    try:
        if args.kind == "redis":
            redis = SentinelRedis(workdir / "redis")
            redis.start()
            database_url = f"sqlite:///{workdir / 'paysched.db'}"
            redis_env = redis.env
            victim: Replicated = redis
        else:
            redis = RedisProcess(workdir / "redis")
            redis.start()
            pg = ReplicatedPostgres(workdir / "pg")
            pg.start()
            database_url = pg.url()
            redis_env = {"REDIS_URL": redis.url}
            victim = _Hung(pg) if args.hang else pg
        env = {
            **redis_env,
            "DATABASE_URL": database_url,
            "PAYSCHED_DATA_DIR": str(workdir / "data"),
            "PAYSCHED_EMBEDDED_REDIS": "never",
            "PAYSCHED_CONCURRENCY": "8",
            "PAYSCHED_TICK_CRON": "*/5 * * * * *",
            "PAYSCHED_LOOKAHEAD": "30s",
            "PAYSCHED_LOCK_MS": "5000",
            "PAYSCHED_LOG_LEVEL": "WARNING",
        }
        store = Store.connect(normalise_database_url(database_url), pool_size=2)
        store.migrate()
        now = datetime.now(UTC)
        for name in ("payer", "payee"):
            store.accounts.create_account(name, "USD", now)
        span = args.rounds * (STEADY_S + 25) + 10
        count = int(span / GAP_S)
        store.accounts.deposit("payer", count * 100, now)
        start = now + timedelta(seconds=5 + count * 0.01)  # after they are all created
        for i in range(count):
            store.payments.create_payment(
                payer="payer",
                payee="payee",
                amount=100,
                currency="USD",
                due_at=start + timedelta(seconds=i * GAP_S),
                cron=None,
                timezone=None,
                memo="failover",
                now=now,
            )
        log = (workdir / "run.log").open("w")
        group = subprocess.Popen(
            [sys.executable, "-m", "paysched", "run", "--processes", "2"],
            env=os.environ | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        failovers = []
        time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
        for n in range(args.rounds):
            time.sleep(STEADY_S)
            killed = time.time()
            promoted_s = victim.fail_over()
            first = _first_completion_after(store, time.time(), timeout=120)
            failovers.append((killed, promoted_s, first))
            print(
                f"round {n + 1}: promoted in {promoted_s:.2f} s, paying again "
                f"{first - killed:.2f} s after the kill",
                flush=True,
            )
            victim.reattach()
        last_due = start + timedelta(seconds=(count - 1) * GAP_S)
        wait_until(
            lambda: _finished(store) >= count,
            (last_due - datetime.now(UTC)).total_seconds() + 120,
            "every payment final",
        )
        occurrences = store.reads.all_occurrences()
        rounds = [_round(occurrences, n + 1, *f) for n, f in enumerate(failovers)]
        succeeded = store.reads.occurrence_counts().get(OccurrenceState.SUCCEEDED.value, 0)
        ledger = store.accounts.ledger_report()
        result = {
            "kind": args.kind,
            "hang": args.hang,
            "rounds": rounds,
            "payments": count,
            "succeeded": succeeded,
            "transfers": store.accounts.succeeded_transfer_count(),
            "ledger_balanced": ledger.balanced,
            "summary": {
                k: _stats([r[k] for r in rounds])
                for k in ("promoted_s", "recovery_s", "due_during", "max_lateness_s")
            },
        }
        name = f"{args.kind}-hang" if args.hang else args.kind
        out = args.out or ROOT / "bench" / "results" / f"failover-{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result["summary"], indent=2))
        ok = succeeded == count == result["transfers"] and ledger.balanced
        print(
            f"{succeeded}/{count} succeeded, {result['transfers']} transfers, ledger "
            f"{'balanced' if ledger.balanced else ledger.problems}; report: {out}"
        )
        return 0 if ok else 1
    finally:
        if group is not None:
            group.terminate()
            try:
                group.wait(timeout=60)
            except subprocess.TimeoutExpired:
                group.kill()
        if store is not None:
            store.close()
        if isinstance(redis, SentinelRedis):
            redis.destroy()
        else:
            redis.stop()
        if pg is not None:
            pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


class _Hung:
    """The PostgreSQL pair whose primary hangs instead of stopping."""

    def __init__(self, pg: ReplicatedPostgres) -> None:
        self.pg = pg

    def fail_over(self) -> float:
        return self.pg.fail_over(hang=True)

    def reattach(self) -> None:
        self.pg.reattach()


def _finished(store: Store) -> int:
    counts = store.reads.occurrence_counts()
    return sum(counts.get(s.value, 0) for s in (OccurrenceState.SUCCEEDED, OccurrenceState.FAILED))


def _first_completion_after(store: Store, after: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = [
                o.finished_at.timestamp()
                for o in store.reads.all_occurrences()
                if o.finished_at is not None and o.finished_at.timestamp() > after
            ]
        except Exception:  # the database itself is coming back
            done = []
        if done:
            return min(done)
        time.sleep(0.1)
    raise SystemExit(f"no payment completed within {timeout:g} s of the promotion")


def _round(
    occurrences: list[Occurrence], n: int, killed: float, promoted_s: float, first: float
) -> dict[str, Any]:
    due = [o for o in occurrences if killed <= o.due_at.timestamp() <= first]
    late = [(o.started_at - o.due_at).total_seconds() for o in due if o.started_at is not None]
    return {
        "round": n,
        "promoted_s": round(promoted_s, 3),
        "recovery_s": round(first - killed, 3),
        "due_during": len(due),
        "max_lateness_s": round(max(late, default=0.0), 3),
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


if __name__ == "__main__":
    sys.exit(main())
