"""`python -m paysched.chaos --seed 1,2 --duration 120 --database postgresql`; see --help."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from paysched.chaos import report
from paysched.chaos.faults import WEIGHTS, kinds
from paysched.chaos.runner import Config, run


def seeds(values: list[str]) -> list[int]:
    out: list[int] = []
    for value in values:
        out += [int(v) for v in value.replace(",", " ").split()]
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m paysched.chaos", description=__doc__)
    ap.add_argument("--seed", action="append", default=[], help="repeatable, or 1,2,3")
    ap.add_argument("--duration", type=float, default=60.0, help="fault phase per seed, seconds")
    ap.add_argument("--payments", type=int, default=500, help="one-time payments per seed")
    ap.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument(
        "--executor",
        choices=["ledger", "provider"],
        default="ledger",
        help="ledger: the in-house ledger; provider: HTTP to the stand-in provider",
    )
    ap.add_argument("--recurring", type=int, default=6, help="recurring payments per seed")
    ap.add_argument(
        "--db-error-rate",
        type=float,
        default=0.005,
        help="share of the workers' occurrence writes failed with a database error",
    )
    ap.add_argument("--out", type=Path, default=Path("chaos-report.json"))
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="processes per worker (a supervised group, as `paysched worker --processes K`)",
    )
    ap.add_argument(
        "--replicated",
        action="store_true",
        help="Redis under Sentinel (primary, replica, 3 sentinels) and, on PostgreSQL, a "
        "synchronous standby: adds the redis_failover and pg_switchover faults",
    )
    ap.add_argument("--schedulers", type=int, default=2)
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--fail-rate", type=float, default=0.08, help="transient executor failures")
    ap.add_argument("--hang-rate", type=float, default=0.03, help="executor hangs past timeout")
    ap.add_argument("--stall-rate", type=float, default=0.01, help="event loop stalls > lock")
    ap.add_argument("--log-level", default="WARNING", help="of the paysched processes")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    ap.add_argument(
        "--faults",
        default="",
        help=f"only these fault kinds, comma-separated: {', '.join(WEIGHTS)}",
    )
    args = ap.parse_args(argv)
    args.faults = tuple(args.faults.replace(",", " ").split())
    if unknown := sorted(set(args.faults) - set(WEIGHTS)):
        ap.error(f"--faults: unknown fault kind(s) {', '.join(unknown)}")
    if args.worker_processes < 1:
        ap.error("--worker-processes: at least 1")
    if args.faults and not kinds(
        args.database, args.executor, args.faults, args.worker_processes > 1, args.replicated
    ):
        ap.error(
            f"--faults: none of them applies to a {args.database} run with executor {args.executor}"
        )
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: servers are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The harness's own paysched calls (double ticks, checks) stay quiet; its own lines do not.
    logging.getLogger("paysched").setLevel(logging.WARNING)
    logging.getLogger("paysched.chaos").setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the harness's own provider reads
    signal.signal(signal.SIGTERM, _terminate)
    runs = []
    for seed in seeds(args.seed) or [1]:
        cfg = Config(
            seed=seed,
            duration=args.duration,
            payments=args.payments,
            database=args.database,
            workers=args.workers,
            worker_processes=args.worker_processes,
            schedulers=args.schedulers,
            drain_timeout=args.drain_timeout,
            fail_rate=args.fail_rate,
            hang_rate=args.hang_rate,
            stall_rate=args.stall_rate,
            executor=args.executor,
            recurring=args.recurring,
            db_error_rate=args.db_error_rate,
            log_level=args.log_level,
            keep=args.keep,
            faults=args.faults,
            replicated=args.replicated,
        )
        result = run(cfg)
        print(report.text(result), flush=True)
        runs.append(result)
        document = {"summary": report.combine(runs), "runs": runs}
        args.out.write_text(json.dumps(document, indent=2))  # after each seed: partial results
    summary = report.combine(runs)
    print(json.dumps(summary, indent=2))
    print(f"report written to {args.out}")
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
