"""`python -m paysched.standin`: run the stand-in provider until SIGTERM or Ctrl-C.

Prints its base URL (one line, flushed) once it accepts connections, so a parent process can
read the port it got with ``--port 0``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from types import FrameType

from paysched.standin.faults import parse_rates
from paysched.standin.server import StandinProvider

TOKEN_ENV = "PAYSCHED_STANDIN_TOKEN"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m paysched.standin",
        description="A stand-in payment provider with seeded fault injection.",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")
    ap.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV, ""),
        help=f"bearer token clients must send (default ${TOKEN_ENV}; empty: none)",
    )
    ap.add_argument("--seed", default="0", help="seed of the fault draws")
    ap.add_argument(
        "--rates",
        default="",
        help="fault rates, e.g. decline=0.05,timeout_before=0.02,pending=0.1,lookup_error=0.1",
    )
    ap.add_argument("--hang-s", type=float, default=3.0, help="timeout_before/after sleep")
    ap.add_argument("--slow-s", type=float, default=0.3, help="slow sleep")
    ap.add_argument("--settle-s", type=float, default=2.0, help="pending settles after this")
    ap.add_argument("--log-level", default="WARNING")
    return ap


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        rates = parse_rates(args.rates)
    except ValueError as exc:
        ap.error(str(exc))
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    provider = StandinProvider(
        args.db,
        token=args.token,
        seed=args.seed,
        rates=rates,
        hang_s=args.hang_s,
        slow_s=args.slow_s,
        settle_s=args.settle_s,
        host=args.host,
        port=args.port,
    )
    signal.signal(signal.SIGTERM, _terminate)
    print(provider.start(), flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is a normal way to stop
        provider.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
