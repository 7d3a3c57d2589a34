"""A real paysched worker process for fault tests.

Usage: python worker_proc.py MODE, with the paysched environment (DATABASE_URL, REDIS_URL, ...)
and PAYSCHED_TEST_MARKER naming a file to create when the fault point is reached. MODE:
  normal              run the ledger executor as shipped
  hang-before-settle  hang after claiming, before any money moves
  hang-in-transaction hang inside the settle transaction, after the ledger rows are written
                      but before COMMIT — the worst moment to die
  die-after-settle    hang right after the payment committed, before its notification is
                      delivered (this process delivers nothing)
The test kills this process with SIGKILL at the fault point.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from paysched.app import App
from paysched.config import Settings
from paysched.executors.base import PaymentOrder
from paysched.executors.claims import claim_of
from paysched.executors.ledger import LedgerExecutor
from paysched.logs import setup_logging


def main(mode: str) -> None:
    marker = Path(os.environ["PAYSCHED_TEST_MARKER"])
    settings = Settings.from_env()
    setup_logging(settings.log_level)  # to stderr: the test's log file
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every stack

    class HangBeforeSettle:
        name = "hang-before-settle"

        def __init__(self, inner: LedgerExecutor) -> None:
            self.inner = inner

        async def execute(self, order: PaymentOrder) -> Any:
            marker.write_text(str(claim_of(order).fence))
            await asyncio.sleep(3600)
            return await self.inner.execute(order)

    class HangAfterSettle:
        name = "hang-after-settle"

        def __init__(self, inner: LedgerExecutor) -> None:
            self.inner = inner

        async def execute(self, order: PaymentOrder) -> Any:
            result = await self.inner.execute(order)
            marker.write_text("settled")
            await asyncio.sleep(3600)
            return result

    def factory(app: App) -> Any:
        ledger = LedgerExecutor(app.store, app.clock, app.pool)
        if mode == "hang-before-settle":
            return HangBeforeSettle(ledger)
        if mode == "die-after-settle":
            return HangAfterSettle(ledger)
        if mode == "hang-in-transaction":

            @event.listens_for(app.store.engine, "after_cursor_execute")
            def _hang(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if statement.lstrip().upper().startswith("INSERT INTO LEDGER_ENTRIES"):
                    marker.write_text("in-transaction")
                    time.sleep(3600)

        return ledger

    async def run() -> None:
        app = await App.open(settings, executor_factory=factory)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await app.run(stop, scheduler=False, deliver=mode != "die-after-settle")
        finally:
            await app.close()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1])
